"""A DeployPlan as Kubernetes objects (plain Deployments, or KServe's InferenceService for the engine), written
with a README to an output directory that appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmprod.deploy.plan import ENGINE_PORT, GATEWAY_CPU, GATEWAY_PORT, DeployPlan

MANAGED = "llmprod"
STORAGE_INITIALIZER = "kserve/storage-initializer:v0.20.0"  # fetches hf://, s3://, gs:// (KServe's own image)
KSERVE_VERSION = "v0.20.0"
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34")


def labels(plan: DeployPlan, component: str) -> dict[str, str]:
    return {**_selector(plan, component), "app.kubernetes.io/managed-by": MANAGED}


def meta(plan: DeployPlan, name: str, component: str, notes: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": plan.spec.namespace, "labels": labels(plan, component)}
    if notes:
        out["annotations"] = {f"llmprod.io/{k}": v for k, v in notes.items()}
    return out


def http_probes(port: str, startup_minutes: int) -> dict[str, Any]:
    def get() -> dict[str, Any]:  # a fresh dict each: YAML would write shared ones as anchors
        return {"httpGet": {"path": "/health", "port": port}}

    return {"startupProbe": {**get(), "periodSeconds": 10, "failureThreshold": startup_minutes * 6},
            "readinessProbe": {**get(), "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**get(), "periodSeconds": 15, "failureThreshold": 4, "timeoutSeconds": 5}}


def _engine_container(plan: DeployPlan, model_arg: str, gpus: int, args: list[str], env: list[dict]) -> dict:
    container = {
        "name": "vllm", "image": plan.spec.engine_image, "command": ["vllm", "serve"], "args": [model_arg, *args],
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)},
                      "requests": {"nvidia.com/gpu": str(gpus), "cpu": str(4 * gpus), "memory": f"{32 * gpus}Gi"}},
        **http_probes("http", startup_minutes=30),
    }
    if env:
        container["env"] = env
    return container


def _model_source(plan: DeployPlan, model: str | None = None) -> tuple[str, list, list, list, list]:
    """(model argument, env, volumes, mounts, init containers) for the engine pod to reach the weights."""
    uri = f"hf://{model}" if model else plan.model_uri
    volumes: list[dict] = []
    mounts: list[dict] = []
    env: list[dict] = []
    init: list[dict] = []
    if uri.startswith("hf://"):
        env = [{"name": "HF_HOME", "value": "/models/hf"},
               {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}}]
        volumes = [{"name": "models", "emptyDir": {}}]
        mounts = [{"name": "models", "mountPath": "/models"}]
        return uri.removeprefix("hf://"), env, volumes, mounts, init
    if uri.startswith("pvc://"):
        claim, _, sub = uri.removeprefix("pvc://").partition("/")
        volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
        mounts = [{"name": "models", "mountPath": "/models", "readOnly": True}]
        return f"/models/{sub}".rstrip("/"), env, volumes, mounts, init
    # s3:// and gs://: KServe's storage initializer copies the checkpoint into the pod before vLLM starts
    volumes = [{"name": "models", "emptyDir": {}}]
    mounts = [{"name": "models", "mountPath": "/models"}]
    init = [{"name": "fetch-model", "image": STORAGE_INITIALIZER, "args": [uri, "/models/model"],
             "envFrom": [{"secretRef": {"name": f"{plan.name}-storage", "optional": True}}],
             "volumeMounts": mounts,
             "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
    return "/models/model", env, volumes, mounts, init


def _shm(gpus: int) -> tuple[list, list]:
    if gpus <= 1:
        return [], []
    # NCCL's shared-memory transport between the tensor-parallel workers needs more than Docker's 64 MiB
    return ([{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{8 * gpus}Gi"}}],
            [{"name": "dshm", "mountPath": "/dev/shm"}])


def _deployment(plan: DeployPlan, name: str, component: str, replicas: int, pod: dict, notes: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(plan, name, component, notes),
            "spec": {"replicas": replicas, "selector": {"matchLabels": _selector(plan, component)},
                     # no surge: a new engine pod would need GPUs the old one still holds
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0 if component != "gateway" else 1,
                                                                             "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": labels(plan, component)}, "spec": pod}}}


def _selector(plan: DeployPlan, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/component": component}


def _service(plan: DeployPlan, name: str, component: str, port: int, target: int | str = "http") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(plan, name, component),
            "spec": {"selector": _selector(plan, component),
                     "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}]}}


def engine_objects(plan: DeployPlan) -> list[dict]:
    gpus = plan.gpus_per_replica
    model_arg, env, volumes, mounts, init = _model_source(plan)
    shm_volumes, shm_mounts = _shm(gpus)
    container = _engine_container(plan, model_arg, gpus, plan.engine_args, env)
    container["volumeMounts"] = mounts + shm_mounts
    pod = {"terminationGracePeriodSeconds": 60, "containers": [container], "volumes": volumes + shm_volumes}
    if init:
        pod["initContainers"] = init
    notes = {**plan.provenance, "model-uri": plan.model_uri}
    return [_deployment(plan, plan.engine_service, "engine", plan.replicas, pod, notes),
            _service(plan, plan.engine_service, "engine", ENGINE_PORT)]


def kserve_objects(plan: DeployPlan) -> list[dict]:
    """The engine as a KServe InferenceService (raw deployment): KServe's storage initializer fetches the URI into
    /mnt/models; the container is vLLM's own image with the same arguments."""
    gpus = plan.gpus_per_replica
    container = _engine_container(plan, "/mnt/models", gpus, plan.engine_args,
                                  [{"name": "STORAGE_URI", "value": plan.model_uri}])
    container["name"] = "kserve-container"
    shm_volumes, shm_mounts = _shm(gpus)
    if shm_mounts:
        container["volumeMounts"] = shm_mounts
    predictor: dict[str, Any] = {"minReplicas": plan.replicas, "maxReplicas": plan.replicas, "containers": [container]}
    if shm_volumes:
        predictor["volumes"] = shm_volumes
    metadata = meta(plan, plan.engine_service, "engine", {**plan.provenance, "model-uri": plan.model_uri})
    metadata["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    return [{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": metadata,
             "spec": {"predictor": predictor}}]


def upstream_url(plan: DeployPlan) -> str:
    if plan.spec.target == "kserve":  # the predictor's Service, port 80 in raw deployment mode
        return f"http://{plan.engine_service}-predictor.{plan.spec.namespace}.svc.cluster.local"
    return f"http://{plan.engine_service}:{ENGINE_PORT}"


def gateway_objects(plan: DeployPlan) -> list[dict]:
    import yaml

    args = ["--upstream", upstream_url(plan), "--host", "0.0.0.0", "--port", str(GATEWAY_PORT),
            "--served-model-name", plan.served_name, "--workers", str(plan.gateway_workers)]
    mounts, volumes, objects = [], [], []
    if plan.policy is None:
        args.append("--no-guardrails")
    else:
        args += ["--guardrails", "/etc/llmprod/policy.yaml"]
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": meta(plan, f"{plan.name}-policy", "gateway", {"guardrails": plan.provenance["guardrails"]}),
                        "data": {"policy.yaml": yaml.safe_dump(plan.policy, sort_keys=False)}})
        mounts.append({"name": "policy", "mountPath": "/etc/llmprod", "readOnly": True})
        volumes.append({"name": "policy", "configMap": {"name": f"{plan.name}-policy"}})
    memory = "2Gi" if not plan.in_gateway_models else "6Gi"  # an in-process classifier and torch
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    volumes.append({"name": "tmp", "emptyDir": {}})
    container = {
        "name": "gateway", "image": plan.spec.gateway_image, "args": args,
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": [{"name": "LLMPROD_API_KEY", "valueFrom": {"secretKeyRef": {"name": f"{plan.name}-api-key", "key": "api-key"}}},
                {"name": "HF_HOME", "value": "/tmp/hf"}],
        "resources": {"requests": {"cpu": str(GATEWAY_CPU), "memory": memory}, "limits": {"memory": memory}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
        **http_probes("http", startup_minutes=5),
    }
    pod = {"terminationGracePeriodSeconds": 30, "containers": [container], "volumes": volumes}
    notes = {"workers": f"--workers {plan.gateway_workers}: one per CPU of the {GATEWAY_CPU}-CPU request",
             "upstream": upstream_url(plan)}
    objects += [_deployment(plan, plan.name, "gateway", 2, pod, notes),
                _service(plan, plan.name, "gateway", 80, "http"),
                {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                 "metadata": meta(plan, plan.name, "gateway"),
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
                          "minReplicas": 2, "maxReplicas": max(4, 2 * plan.replicas),
                          "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                              "type": "Utilization", "averageUtilization": 70}}}]}},
                {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(plan, plan.name, "gateway"),
                 "spec": {"minAvailable": 1, "selector": {"matchLabels": _selector(plan, "gateway")}}}]
    return objects


def guard_objects(plan: DeployPlan) -> list[dict]:
    out = []
    for guard in plan.guard_engines:
        model_arg, env, volumes, mounts, init = _model_source(plan, guard.model)
        container = _engine_container(plan, model_arg, 1, guard.args, env)
        container["volumeMounts"] = mounts
        container["resources"]["requests"].update({"cpu": "2", "memory": "16Gi"})
        pod = {"terminationGracePeriodSeconds": 30, "containers": [container], "volumes": volumes}
        if init:
            pod["initContainers"] = init
        dep = _deployment(plan, guard.name, f"guard-{guard.name.rsplit('-guard-', 1)[-1]}"[:63], 1, pod,
                          {"guard-model": guard.model, "guardrails": plan.provenance["guardrails"]})
        out += [dep, _service(plan, guard.name, dep["metadata"]["labels"]["app.kubernetes.io/component"], ENGINE_PORT)]
    return out


def fleet_objects(plan: DeployPlan) -> list[dict]:
    """Budgets and monitoring for the engine (and guard engines): a PodDisruptionBudget that lets one engine pod go at
    a time, and one ServiceMonitor scraping every Service of the deployment's /metrics."""
    objects = []
    if plan.spec.target == "kubernetes":
        objects.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                        "metadata": meta(plan, plan.engine_service, "engine"),
                        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(plan, "engine")}}})
    else:  # KServe's own predictor Service does not carry our labels: a headless one for the scrape
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta(plan, f"{plan.engine_service}-metrics", "engine"),
                        "spec": {"clusterIP": "None",
                                 "selector": {"serving.kserve.io/inferenceservice": plan.engine_service},
                                 "ports": [{"name": "http", "port": ENGINE_PORT, "targetPort": ENGINE_PORT,
                                            "protocol": "TCP"}]}})
    objects.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                    "metadata": meta(plan, plan.name, "monitoring"),
                    "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": plan.name,
                                                          "app.kubernetes.io/managed-by": MANAGED}},
                             "namespaceSelector": {"matchNames": [plan.spec.namespace]},
                             "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}]}})
    return objects


def render(plan: DeployPlan) -> dict[str, list[dict]]:
    """{file name: objects}, in the order `kubectl apply -f DIR` should create them."""
    engine = kserve_objects(plan) if plan.spec.target == "kserve" else engine_objects(plan)
    files = {"10-engine.yaml": engine, "20-gateway.yaml": gateway_objects(plan), "30-fleet.yaml": fleet_objects(plan)}
    if plan.guard_engines:
        files["15-guard-engines.yaml"] = guard_objects(plan)
    return dict(sorted(files.items()))


def write(plan: DeployPlan, output: Path) -> dict[str, Any]:
    """Render into a temporary directory beside `output` and rename it into place: all of it, or nothing."""
    import yaml

    files = render(plan)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for name, objects in files.items():
            (tmp / name).write_text(yaml.safe_dump_all(objects, sort_keys=False, width=120), encoding="utf-8")
        summary = _summary(plan, files)
        (tmp / "plan.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme(plan, files), encoding="utf-8")
        if output.exists():
            output.rmdir()  # empty, or the plan refused it
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**summary, "output": str(output)}


def _summary(plan: DeployPlan, files: dict[str, list[dict]]) -> dict[str, Any]:
    m = plan.memory
    return {"name": plan.name, "target": plan.spec.target, "namespace": plan.spec.namespace,
            "gpu": m["preflight"]["gpu"] if m.get("preflight") else plan.spec.gpu, "kernel": m["kernel"],
            "engine_replicas": plan.replicas, "gpus_per_replica": plan.gpus_per_replica,
            "engine_args": plan.engine_args, "model_uri": plan.model_uri,
            "guard_engines": [g.model for g in plan.guard_engines], "in_gateway_models": plan.in_gateway_models,
            "kv_cache_tokens": m["kv_cache_tokens"], "max_concurrency": m["max_concurrency"],
            "provenance": plan.provenance,
            "files": {name: [f"{o['kind']}/{o['metadata']['name']}" for o in objects] for name, objects in files.items()}}


def readme(plan: DeployPlan, files: dict[str, list[dict]]) -> str:
    s = plan.spec
    listing = "\n".join(f"- `{name}`: " + ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in objects)
                        for name, objects in files.items())
    notes = "\n".join(f"- **{k}**: {v}" for k, v in plan.provenance.items())
    kserve = (f"\nThe engine is a KServe {KSERVE_VERSION} `InferenceService` in raw deployment mode: KServe must be "
              "installed in the cluster, and its storage initializer fetches the model URI into `/mnt/models`.\n"
              if s.target == "kserve" else "")
    guards = ""
    if plan.guard_engines:
        guards = ("\nEach Llama Guard model of the policy runs in its own vLLM Deployment (`15-guard-engines.yaml`), "
                  "one GPU each, and the policy in the ConfigMap points at it (`endpoint:`). A whole GPU for a 1B "
                  "guard is more than it needs: on a cluster with MIG or time-slicing, lower its `nvidia.com/gpu` "
                  "request to a slice.\n")
    if plan.in_gateway_models:
        guards += (f"\n{', '.join(plan.in_gateway_models)} run in-process in the gateway pods (Prompt Guard 2 is a DeBERTa-v2 "
                   "classifier, an architecture vLLM 0.26 does not have), so the gateway requests more memory.\n")
    return f"""# {plan.name}: {plan.served_name} on {s.gpu}, rendered by `llmprod deploy`

{listing}
- `plan.json`: the numbers behind these files.
{kserve}{guards}
## Where the numbers come from

{notes}

## Apply

```bash
kubectl create namespace {s.namespace} --dry-run=client -o yaml | kubectl apply -f -
kubectl -n {s.namespace} create secret generic {plan.name}-api-key --from-literal=api-key="$LLMPROD_API_KEY"
kubectl -n {s.namespace} create secret generic hf-token --from-literal=token="$HF_TOKEN"   # gated hub models
kubectl apply -f .        # (the ServiceMonitor needs the Prometheus Operator's CRDs)
```

## Check

```bash
kubectl -n {s.namespace} rollout status deployment/{plan.name}
kubectl -n {s.namespace} port-forward service/{plan.name} 8080:80 &
curl -s localhost:8080/v1/models -H "Authorization: Bearer $LLMPROD_API_KEY"
curl -s localhost:8080/metrics | grep llmprod_
```

The engine pods start in minutes, not seconds (download, torch.compile, CUDA graphs): the startup probe allows
30 minutes. The gateway answers 503 until the engine is ready. llmprod's tests validate manifests rendered this
way against the Kubernetes {KUBERNETES_VERSIONS[0]}-{KUBERNETES_VERSIONS[-1]} schemas{" and KServe " + KSERVE_VERSION + "'s CRD" if s.target == "kserve" else ""}; check these
against your cluster with `kubectl apply --dry-run=server -f .`.
"""
