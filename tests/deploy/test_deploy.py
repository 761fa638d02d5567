"""`llmprod deploy` (issue #33): manifests validated offline against the Kubernetes schemas of the versions claimed
and the vendored CRDs (KServe v0.20.0, Prometheus Operator), golden files for three shapes, and every refusal as
one line, exit 2, nothing written.

Regenerate the golden files after a deliberate change: LLMPROD_UPDATE_GOLDEN=1 pytest tests/deploy
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from llmprod.deploy.render import KUBERNETES_VERSIONS

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "deploy-golden"
ROOT = Path(__file__).resolve().parents[2]
GATEWAY_IMAGE = "registry.example.com/llmprod-gateway:0.1"
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices-kserve-v0.20.0.yaml.gz",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors-prometheus-operator-v0.93.0.yaml.gz",
}


# --- offline validation --------------------------------------------------------------------------------------------

def _strict(schema):
    """A CRD's structural schema with unknown fields refused, as the API server does for them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schema(api_version: str, kind: str) -> dict:
    crd = yaml.safe_load(gzip.decompress((DATA / "crds" / CRDS[(api_version, kind)]).read_bytes()))
    version = api_version.rsplit("/", 1)[-1]
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version and v["served"])
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by the API server, not the CRD
    return schema


def validate(obj: dict) -> None:
    """Raise unless `obj` is valid for every Kubernetes version claimed (core kinds, strict) or its vendored CRD."""
    import jsonschema
    import kubernetes_validate

    key = (obj["apiVersion"], obj["kind"])
    if key in CRDS:
        jsonschema.validate(obj, _crd_schema(*key))
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, f"{version}.0", strict=True)


def objects_in(directory: Path) -> list[dict]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


# --- the three shapes --------------------------------------------------------------------------------------------

def _checkpoint(tmp_path: Path, name: str, config: dict) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def _llama_70b_fp8() -> dict:
    config = json.loads((DATA / "model-configs" / "meta-llama__Llama-3.1-70B-Instruct.json").read_text())
    config["quantization_config"] = json.loads(
        (DATA / "vllm-0.26.0" / "llama-3.1-8b-w8a8-fp8.json").read_text())["quantization_config"]
    return config


SHAPES = {
    # an 8B AWQ checkpoint (AutoAWQ GEMM) on one L4, read from S3
    "llama-8b-awq-l4": lambda tmp: (
        [str(_checkpoint(tmp, "llama-3.1-8b-awq", json.loads((DATA / "vllm-0.26.0" / "llama-3.1-8b-awq-gemm.json").read_text()))),
         "--model-uri", "s3://models/llama-3.1-8b-awq", "--gpu", "L4", "--max-model-len", "8192", "--target", "kubernetes",
         "--namespace", "llm"]),
    # a 70B FP8 checkpoint at tensor parallel 4 on H100s, as a KServe InferenceService, three replicas
    "llama-70b-fp8-tp4-h100-kserve": lambda tmp: (
        [str(_checkpoint(tmp, "llama-3.1-70b-fp8", _llama_70b_fp8())), "--model-uri", "pvc://models/llama-3.1-70b-fp8",
         "--gpu", "H100", "-tp", "4", "--max-model-len", "32768", "--target", "kserve", "--replicas", "3",
         "--namespace", "llm"]),
    # the guardrail sandwich: Llama Guard on an engine of its own, Prompt Guard in the gateway
    "qwen3-8b-sandwich": lambda tmp: (
        [str(_checkpoint(tmp, "qwen3-8b", json.loads((DATA / "model-configs" / "Qwen__Qwen3-8B.json").read_text()))),
         "--model-uri", "hf://Qwen/Qwen3-8B", "--gpu", "H200", "--max-model-len", "32768", "--guardrails", "sandwich",
         "--target", "kubernetes", "--namespace", "llm"]),
}


@pytest.fixture(params=sorted(SHAPES))
def rendered(request, cli, tmp_path):
    args = SHAPES[request.param](tmp_path)
    out = tmp_path / "out"
    result = cli("deploy", *args, "--image-gateway", GATEWAY_IMAGE, "--output", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    return request.param, out, result.json()


def test_every_object_validates_offline(rendered):
    _, out, _ = rendered
    objects = objects_in(out)
    assert objects
    for obj in objects:
        validate(obj)


def test_the_rendered_files_match_the_golden_ones(rendered):
    shape, out, _ = rendered
    golden = GOLDEN / shape
    if os.environ.get("LLMPROD_UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(out, golden)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in golden.iterdir()), "regenerate: LLMPROD_UPDATE_GOLDEN=1 pytest tests/deploy"
    for name in names:
        assert (out / name).read_text() == (golden / name).read_text(), name


def test_the_validator_refuses_what_a_cluster_would(rendered):
    """The checks can fail: a misspelt field, a wrong type, an unknown CRD field are each refused."""
    import jsonschema
    import kubernetes_validate

    _, out, _ = rendered
    for obj in objects_in(out):
        bad = copy.deepcopy(obj)
        (bad.get("spec", bad))["replicaz" if obj["kind"] == "Deployment" else "unknownField"] = 1
        with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
            validate(bad)


def test_engine_args_are_the_memory_plans(rendered):
    shape, out, doc = rendered
    engines = [o for o in objects_in(out) if o["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
               and o["kind"] in ("Deployment", "InferenceService")]
    assert len(engines) == 1
    engine = engines[0]
    pod = engine["spec"]["template"]["spec"] if engine["kind"] == "Deployment" else engine["spec"]["predictor"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[1:] == doc["engine_args"]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus == doc["gpus_per_replica"]
    flags = dict(zip(args[1::2], args[2::2]))
    assert flags["--gpu-memory-utilization"] == "0.92"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    annotations = engine["metadata"]["annotations"]
    assert {"llmprod.io/memory-plan", "llmprod.io/replicas", "llmprod.io/recipe", "llmprod.io/model-uri"} <= set(annotations)
    if shape.startswith("llama-70b"):
        assert gpus == 4 and flags["--tensor-parallel-size"] == "4" and engine["kind"] == "InferenceService"
        assert any(v["name"] == "dshm" for v in pod["volumes"])  # NCCL's shared memory between the 4 workers
        assert engine["spec"]["predictor"]["minReplicas"] == 3 and doc["kernel"] == "CUTLASS FP8"
        assert {"name": "STORAGE_URI", "value": "pvc://models/llama-3.1-70b-fp8"} in container["env"]
    if shape.startswith("llama-8b"):
        assert doc["kernel"] == "Marlin" and flags["--max-num-batched-tokens"] == "2048"  # L4: vLLM's small-GPU default
        assert pod["initContainers"][0]["args"] == ["s3://models/llama-3.1-8b-awq", "/models/model"]


def test_the_gateway_fronts_the_engine_with_the_policy_and_the_dockerfiles_user(rendered):
    from dockerfile_parse import DockerfileParser

    shape, out, doc = rendered
    objects = objects_in(out)
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == doc["name"])
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "--upstream" and container["image"] == GATEWAY_IMAGE
    assert container["securityContext"]["runAsUser"] == 10001
    assert args[args.index("--workers") + 1] == container["resources"]["requests"]["cpu"]  # one worker per CPU
    dockerfile = DockerfileParser(path=str(ROOT / "deploy" / "gateway.Dockerfile"))
    assert json.loads(dockerfile.json)  # it parses
    instructions = {i["instruction"]: i["value"] for i in dockerfile.structure}
    assert json.loads(instructions["ENTRYPOINT"]) == ["llmprod", "serve"]  # the manifests give serve's options
    assert instructions["USER"] == "10001" and "--uid 10001" in instructions["RUN"]
    assert dockerfile.baseimage.startswith("python:3.11-slim")
    kinds = {o["kind"] for o in objects}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "Service", "ConfigMap"} <= kinds
    policy_text = next(o for o in objects if o["kind"] == "ConfigMap")["data"]["policy.yaml"]
    from llmprod.guardrails.policy import load_policy

    (out.parent / "policy.yaml").write_text(policy_text)
    assert load_policy(out.parent / "policy.yaml").name == doc["provenance"]["guardrails"].split()[1]  # serve reads it
    policy = yaml.safe_load(policy_text)
    if shape == "qwen3-8b-sandwich":
        guards = [o for o in objects if o["kind"] == "Deployment" and "-guard-" in o["metadata"]["name"]]
        assert [g["spec"]["template"]["spec"]["containers"][0]["args"][0] for g in guards] == ["meta-llama/Llama-Guard-3-1B"]
        endpoints = {c["options"].get("endpoint") for stage in ("input", "output") for c in policy[stage]
                     if c["check"] == "llama_guard"}
        assert endpoints == {f"http://{guards[0]['metadata']['name']}:8000/v1"}
        assert doc["in_gateway_models"] == ["meta-llama/Llama-Prompt-Guard-2-86M"]


def test_the_output_readme_says_how_to_apply_and_check(rendered):
    _, out, doc = rendered
    text = (out / "README.md").read_text()
    assert "kubectl apply -f ." in text and f"rollout status deployment/{doc['name']}" in text
    assert "Where the numbers come from" in text and "estimate-memory:" in text


def test_replicas_from_a_rate_and_a_measured_capacity(cli, tmp_path):
    bench = {"search": {"mode": "rate", "percentile": 99, "slos_ms": {"ttft": 500}, "answer": 4.5, "probes": []}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    args = SHAPES["llama-8b-awq-l4"](tmp_path)
    result = cli("deploy", *args, "--image-gateway", GATEWAY_IMAGE, "--rate", "20", "--capacity",
                 str(tmp_path / "bench.json"), "--output", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["engine_replicas"] == 5  # ceil(20 / 4.5)
    assert "20 req/s ÷ 4.5 req/s per replica" in doc["provenance"]["replicas"] and "ttft p99 ≤ 500 ms" in doc["provenance"]["replicas"]


def test_a_perplexity_result_is_recorded(cli, tmp_path):
    (tmp_path / "ppl.json").write_text(json.dumps({"perplexity": 7.91, "dataset": "wikitext2", "increase": 0.021,
                                                   "max_increase": 0.05, "passed": True,
                                                   "baseline": {"perplexity": 7.747}}))
    args = SHAPES["llama-8b-awq-l4"](tmp_path)
    result = cli("deploy", *args, "--image-gateway", GATEWAY_IMAGE, "--perplexity", str(tmp_path / "ppl.json"),
                 "--output", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["provenance"]["perplexity"] == "perplexity 7.910 on wikitext2, +2.10% over the baseline's 7.747 (ppl.json)"


# --- refusals: one line, exit 2, nothing written -----------------------------------------------------------------

def _refusal_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    ckpt = SHAPES["llama-8b-awq-l4"](tmp)[0]
    big = str(_checkpoint(tmp, "llama-70b-bf16", json.loads(
        (DATA / "model-configs" / "meta-llama__Llama-3.1-70B-Instruct.json").read_text())))
    w4a8 = json.loads((DATA / "vllm-0.26.0" / "llama-3.1-8b-gptq-w4a16.json").read_text())
    next(iter(w4a8["quantization_config"]["config_groups"].values()))["input_activations"] = {
        "num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}
    w4a8_dir = str(_checkpoint(tmp, "llama-w4a8", w4a8))
    (tmp / "conc.json").write_text(json.dumps({"search": {"mode": "concurrency", "answer": 32}}))
    (tmp / "failed.json").write_text(json.dumps({"perplexity": 9.1, "increase": 0.12, "max_increase": 0.05,
                                                 "passed": False}))
    (tmp / "bad-policy.yaml").write_text("name: bad\ninput:\n  - check: secretz\n")
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("x")
    image = ["--image-gateway", GATEWAY_IMAGE, "--max-model-len", "8192"]
    uri = ["--model-uri", "s3://m/x"]
    return {
        "does not fit": ([big, *uri, "--gpu", "L4", *image], "does not fit the L4"),
        "cannot load": ([w4a8_dir, *uri, "--gpu", "L4", *image], "nearest scheme that loads there is w4a16"),
        "no gateway image": ([ckpt, *uri, "--gpu", "L4", "--max-model-len", "8192"], "no --image-gateway"),
        "local dir, no uri": ([ckpt, "--gpu", "L4", *image], "cluster cannot read"),
        "bad uri": ([ckpt, "--model-uri", "/data/x", "--gpu", "L4", *image], "is not a URI the cluster can read"),
        "rate without capacity": ([ckpt, *uri, "--gpu", "L4", "--rate", "5", *image], "--rate needs --capacity"),
        "replicas and rate": ([ckpt, *uri, "--gpu", "L4", "--rate", "5", "--replicas", "2", *image], "both given"),
        "concurrency capacity": ([ckpt, *uri, "--gpu", "L4", "--rate", "5", "--capacity", str(tmp / "conc.json"), *image],
                                 "no capacity in requests per second"),
        "failed perplexity gate": ([ckpt, *uri, "--gpu", "L4", "--perplexity", str(tmp / "failed.json"), *image],
                                   "failed its perplexity gate"),
        "bad target": ([ckpt, *uri, "--gpu", "L4", "--target", "nomad", *image], "--target 'nomad'"),
        "unknown gpu": ([ckpt, *uri, "--gpu", "TPU", *image], "unknown GPU 'TPU'"),
        "unknown policy": ([ckpt, *uri, "--gpu", "L4", "--guardrails", "nope", *image], "no guardrail policy 'nope'"),
        "invalid policy": ([ckpt, *uri, "--gpu", "L4", "--guardrails", str(tmp / "bad-policy.yaml"), *image],
                           "unknown check 'secretz'"),
    }


REFUSALS = ["does not fit", "cannot load", "no gateway image", "local dir, no uri", "bad uri", "rate without capacity",
            "replicas and rate", "concurrency capacity", "failed perplexity gate", "bad target", "unknown gpu",
            "unknown policy", "invalid policy"]


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_plan_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, case):
    args, words = _refusal_cases(tmp_path)[case]
    out = tmp_path / "out"
    result = cli("deploy", *args, "--output", str(out))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert words in " ".join(result.stderr.split()) and result.stderr.strip().count("\n") == 0, result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no half-written temporary either


def test_a_non_empty_output_directory_is_refused_and_left_alone(cli, tmp_path):
    args = SHAPES["llama-8b-awq-l4"](tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.yaml").write_text("keep: me\n")
    result = cli("deploy", *args, "--image-gateway", GATEWAY_IMAGE, "--output", str(tmp_path / "out"))
    assert result.exit_code == 2 and "is not empty" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.yaml"]
