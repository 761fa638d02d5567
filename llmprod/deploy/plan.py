"""What `llmprod deploy` decides before it renders anything: the engine's vLLM arguments from estimate-memory's
plan for the GPU named, the replica count from a measured capacity, where the pods read the weights, the guard
models that need their own engine, and where every number came from.

Everything a cluster would only reject later is refused here, before a file is written: a plan that does not
fit the GPU, a weight format its kernels cannot load, a checkpoint the cluster cannot reach, no gateway image.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprod.errors import InputError

TARGETS = ("kubernetes", "kserve")
DEFAULT_ENGINE_IMAGE = "vllm/vllm-openai:v0.26.0"
URI_SCHEMES = ("hf://", "s3://", "gs://", "pvc://")
ENGINE_PORT, GATEWAY_PORT = 8000, 8080
GATEWAY_CPU = 2  # CPU request per gateway pod; one worker per CPU (serve --workers)
GUARD_MEMORY_UTILIZATION = 0.30  # a 1B guard model and its KV cache, on a GPU of its own pod


@dataclass(frozen=True)
class DeploySpec:
    checkpoint: str
    target: str
    gpu: str
    output: Path
    gateway_image: str | None = None
    engine_image: str = DEFAULT_ENGINE_IMAGE
    model_uri: str | None = None
    name: str | None = None
    namespace: str = "default"
    replicas: int | None = None
    rate: float | None = None  # requests per second the fleet must carry
    capacity: Path | None = None  # `llmprod bench --find-max ... --rate ... --json`
    perplexity: Path | None = None  # `llmprod perplexity ... --baseline ... --json`
    guardrails: str | None = "default"  # None: --no-guardrails
    max_model_len: int | None = None
    tp: int = 1
    pp: int = 1
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str = "auto"
    vllm_version: str = "0.26.0"


@dataclass
class GuardEngine:
    """A guard model of the policy served by a vLLM Deployment of its own."""

    model: str
    name: str  # the Deployment and Service
    args: list[str]


@dataclass
class DeployPlan:
    spec: DeploySpec
    name: str
    served_name: str
    model_uri: str
    engine_args: list[str]
    gpus_per_replica: int
    replicas: int
    replicas_from: str
    memory: dict[str, Any]
    policy: dict[str, Any] | None
    policy_name: str | None
    guard_engines: list[GuardEngine] = field(default_factory=list)
    in_gateway_models: list[str] = field(default_factory=list)  # guard models the gateway runs in-process
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def engine_service(self) -> str:
        return f"{self.name}-engine"

    @property
    def gateway_workers(self) -> int:
        return GATEWAY_CPU


def dns_name(text: str) -> str:
    """A DNS-1123 label from a model name: lowercase, dashes, at most 40 characters (room for suffixes)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower().rsplit("/", 1)[-1]).strip("-")[:40].strip("-")
    if not name:
        raise InputError(f"cannot make a Kubernetes name from {text!r}", hint="pass --name NAME (lowercase, dashes)")
    return name


def build_plan(spec: DeploySpec) -> DeployPlan:
    _check_inputs(spec)
    uri = _model_uri(spec)  # before the plan: a checkpoint the cluster cannot reach is refused however it fits
    from llmprod.memory.plan import MemorySpec, estimate

    memory = estimate(MemorySpec(model=spec.checkpoint, context=spec.max_model_len, gpu=spec.gpu, tp=spec.tp,
                                 pp=spec.pp, gpu_memory_utilization=spec.gpu_memory_utilization,
                                 kv_cache_dtype=spec.kv_cache_dtype, vllm_version=spec.vllm_version,
                                 vllm_version_from="the engine image's release"))
    if memory["loads"] is False:
        raise InputError(memory["reason"], hint="quantize to the scheme named, or deploy on a GPU that runs this one")
    if not memory["fits"]:
        raise InputError(f"the plan does not fit the {spec.gpu}: {memory['reason']}",
                         hint="raise --tensor-parallel-size, lower --max-model-len, or quantize the weights")
    name = spec.name or dns_name(spec.checkpoint)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", name):
        raise InputError(f"--name {name!r} is not a Kubernetes name", hint="lowercase letters, digits and dashes, "
                                                                          "at most 40 characters")
    local = Path(spec.checkpoint)
    served = (local.parent if local.is_file() else local).resolve().name if local.exists() else spec.checkpoint
    replicas, replicas_from = _replicas(spec)
    provenance = {"memory-plan": _memory_note(memory), "replicas": replicas_from}
    provenance.update(_checkpoint_notes(spec.checkpoint))
    if spec.perplexity:
        provenance["perplexity"] = _perplexity_note(spec.perplexity)
    plan = DeployPlan(spec=spec, name=name, served_name=served, model_uri=uri,
                      engine_args=engine_args(spec, memory, served), gpus_per_replica=spec.tp * spec.pp,
                      replicas=replicas, replicas_from=replicas_from, memory=memory, policy=None, policy_name=None,
                      provenance=provenance)
    if spec.guardrails is not None:
        _plan_guardrails(plan)
    return plan


def _check_inputs(spec: DeploySpec) -> None:
    if spec.target not in TARGETS:
        raise InputError(f"--target {spec.target!r} is not one llmprod renders", hint=f"use one of {', '.join(TARGETS)}")
    if not spec.gateway_image:
        raise InputError("no --image-gateway: the gateway runs from an image your cluster can pull",
                         hint="build deploy/gateway.Dockerfile, push it to your registry, and pass --image-gateway "
                              "REGISTRY/llmprod-gateway:TAG")
    if spec.replicas is not None and spec.rate is not None:
        raise InputError("--replicas and --rate both given", hint="give a replica count, or a rate with --capacity")
    if spec.rate is not None and spec.capacity is None:
        raise InputError("--rate needs --capacity", hint="measure one replica first: llmprod bench URL --find-max "
                                                         "ttft:500 --rate 1 --json > bench.json; pass --capacity bench.json")
    if spec.output.exists() and any(spec.output.iterdir()):
        raise InputError(f"--output {spec.output} is not empty", hint="give a new directory (nothing is overwritten)")


def _model_uri(spec: DeploySpec) -> str:
    from llmprod.modelio import is_hub_id

    if spec.model_uri:
        if not spec.model_uri.startswith(URI_SCHEMES):
            raise InputError(f"--model-uri {spec.model_uri!r} is not a URI the cluster can read",
                             hint=f"use one of {', '.join(URI_SCHEMES)}, e.g. s3://bucket/models/name or pvc://claim/path")
        return spec.model_uri
    if Path(spec.checkpoint).exists():
        raise InputError(f"{spec.checkpoint} is a directory on this machine, which the cluster cannot read",
                         hint="upload it and pass --model-uri (s3://..., gs://..., pvc://CLAIM/PATH or hf://ORG/NAME)")
    if is_hub_id(spec.checkpoint):
        return f"hf://{spec.checkpoint}"
    raise InputError(f"no model URI for {spec.checkpoint!r}", hint="pass --model-uri")


def engine_args(spec: DeploySpec, memory: dict[str, Any], served: str) -> list[str]:
    """vLLM's arguments, from the memory plan that fits (the same numbers estimate-memory printed)."""
    v = memory["vllm"]
    args = ["--served-model-name", served, "--host", "0.0.0.0", "--port", str(ENGINE_PORT),
            "--max-model-len", str(memory["context"]), "--gpu-memory-utilization", str(v["gpu_memory_utilization"]),
            "--max-num-batched-tokens", str(memory["max_num_batched_tokens"]),
            "--max-num-seqs", str(memory["max_num_seqs"])]
    if spec.tp > 1:
        args += ["--tensor-parallel-size", str(spec.tp)]
    if spec.pp > 1:
        args += ["--pipeline-parallel-size", str(spec.pp)]
    if spec.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", spec.kv_cache_dtype]
    return args


def _replicas(spec: DeploySpec) -> tuple[int, str]:
    if spec.rate is None:
        n = spec.replicas or 1
        return n, "--replicas" if spec.replicas else "one replica (no --replicas or --rate given)"
    try:
        bench = json.loads(Path(spec.capacity).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read --capacity {spec.capacity}: {exc}",
                         hint="give the JSON of `llmprod bench --find-max ... --rate ... --json`") from None
    search = bench.get("search") or {}
    if search.get("mode") != "rate" or not search.get("answer"):
        raise InputError(f"--capacity {spec.capacity} has no capacity in requests per second",
                         hint="run `llmprod bench --find-max SLOS --rate START --json` against one replica")
    per_replica = float(search["answer"])
    n = max(1, math.ceil(spec.rate / per_replica))
    slos = ", ".join(f"{k} p{search.get('percentile', 99)} ≤ {v} ms" for k, v in (search.get("slos_ms") or {}).items())
    return n, (f"--rate {spec.rate:g} req/s ÷ {per_replica:g} req/s per replica (bench --find-max in "
               f"{spec.capacity.name}: {slos or 'its SLOs'}) = {n}")


def _memory_note(memory: dict[str, Any]) -> str:
    return (f"estimate-memory: {memory['weights_bytes'] / 2**30:.2f} GiB weights, "
            f"{memory['kv_cache_bytes'] / 2**30:.2f} GiB KV cache, {memory['kv_cache_tokens']:,} tokens, concurrency "
            f"{memory['max_concurrency']:.2f}x at {memory['context']:,}; kernel {memory['kernel']} "
            f"(vLLM {memory['vllm']['defaults_of']})")


def _checkpoint_notes(checkpoint: str) -> dict[str, str]:
    manifest = Path(checkpoint) / "llmprod.json"
    if not manifest.is_file():
        return {"recipe": "not an llmprod quantize output (no llmprod.json)"}
    data = json.loads(manifest.read_text(encoding="utf-8"))
    return {"recipe": f"llmprod quantize {data.get('method')} {data.get('scheme')} of {data['source']['model']} "
                      f"({data.get('created')})"}


def _perplexity_note(path: Path) -> str:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read --perplexity {path}: {exc}",
                         hint="give the JSON of `llmprod perplexity ... --baseline ... --json`") from None
    if data.get("passed") is False:
        raise InputError(f"--perplexity {path}: the checkpoint failed its perplexity gate (increase "
                         f"{data.get('increase', 0):.2%} > {data.get('max_increase', 0):.2%})",
                         hint="deploy a checkpoint that passed, or re-run the gate")
    base = data.get("baseline") or {}
    increase = f", +{data['increase']:.2%} over the baseline's {base.get('perplexity', 0):.3f}" if "increase" in data else ""
    return f"perplexity {data['perplexity']:.3f} on {data.get('dataset')}{increase} ({Path(path).name})"


def _plan_guardrails(plan: DeployPlan) -> None:
    """The policy as the gateway will read it: each Llama Guard model gets a vLLM Deployment of its own and the
    policy's `endpoint:` pointing at it; checks vLLM cannot serve (Prompt Guard's classifier) stay in-process."""
    import yaml

    from llmprod.bundled import RECIPES
    from llmprod.guardrails.policy import in_process_models, load_policy, point_guards, served_guard_models
    from llmprod.serve.guards import GUARD_MAX_MODEL_LEN

    spec = plan.spec
    path = Path(spec.guardrails)
    if not path.is_file():
        path = RECIPES / "guardrails" / f"{spec.guardrails}.yaml"
        if not path.is_file():
            raise InputError(f"no guardrail policy {spec.guardrails!r}", hint="give a policy YAML or a bundled name")
    load_policy(path)  # validated as the gateway will validate it: a mistake is refused here, not in the pods
    policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    engines = [GuardEngine(model, f"{plan.name}-guard-{dns_name(model)}"[:63].rstrip("-"), [
        "--served-model-name", model, "--host", "0.0.0.0", "--port", str(ENGINE_PORT),
        "--max-model-len", str(GUARD_MAX_MODEL_LEN), "--gpu-memory-utilization", str(GUARD_MEMORY_UTILIZATION)])
        for model in served_guard_models(policy)]
    point_guards(policy, {e.model: f"http://{e.name}:{ENGINE_PORT}/v1" for e in engines})
    plan.in_gateway_models = in_process_models(policy)
    plan.policy, plan.policy_name = policy, policy.get("name", path.stem)
    plan.guard_engines = engines
    plan.provenance["guardrails"] = (f"policy {plan.policy_name} ({path.name}); guard engines: "
                                     + (", ".join(e.model for e in plan.guard_engines) or "none")
                                     + (f"; in the gateway: {', '.join(plan.in_gateway_models)}"
                                        if plan.in_gateway_models else ""))


__all__ = ["TARGETS", "DeployPlan", "DeploySpec", "build_plan"]
