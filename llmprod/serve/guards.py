"""The policy's guard models served by vLLM beside the main model: `serve MODEL --engine vllm --guardrails
sandwich` starts one vLLM per distinct Llama Guard model (on the main model's GPU, or `--guard-gpu N`),
points the policy's `model:` entries at them (`endpoint:`), and gives the main engine what is left.

The memory split: each guard engine gets `--kv-cache-memory` for what its checks need at the gateway's
`--max-concurrency` (GUARD_TOKENS_PER_CHECK tokens a check in flight: the category list, the conversation
and the output window; a longer one waits in the guard engine's queue, it is never refused below
GUARD_MAX_MODEL_LEN), plus its weights and vLLM's overhead as estimate-memory plans them; on a shared GPU the
main engine's `--gpu-memory-utilization` is lowered by that share. Prompt Guard's classifier stays in-process:
it is a DeBERTa-v2 model, and vLLM 0.26.0's model registry has no DeBERTa architecture.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmprod.errors import InputError
from llmprod.guardrails.policy import point_guards, served_guard_models
from llmprod.serve.engines import EngineCommand, free_port, vllm_command
from llmprod.serve.spec import EngineOptions

GUARD_MAX_MODEL_LEN = 8192
GUARD_TOKENS_PER_CHECK = 2048
MIN_MAIN_UTILIZATION = 0.10


@dataclass(frozen=True)
class GuardEngine:
    model: str
    command: EngineCommand
    kv_cache_bytes: int
    total_bytes: int  # weights + KV cache + activation + non-torch + CUDA graphs, as planned
    max_model_len: int

    @property
    def endpoint(self) -> str:
        return f"{self.command.base_url}/v1"

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "endpoint": self.endpoint, "max_model_len": self.max_model_len,
                "kv_cache_memory_bytes": self.kv_cache_bytes,
                "planned_bytes": self.total_bytes, "gpu": self.command.env.get("CUDA_VISIBLE_DEVICES", "shared")}


def _footprint(model: str, concurrency: int) -> tuple[int, int, int]:
    """(max model length, KV cache bytes, everything the guard engine holds) from estimate-memory's plan of the
    guard model (its KV bytes a token, weights and overheads do not depend on the length planned)."""
    from llmprod.memory.plan import CUDA_GRAPH_BYTES, MemorySpec, estimate

    plan = estimate(MemorySpec(model=model, gpu_memory_bytes=1 << 40))  # at the model's own length
    length = min(GUARD_MAX_MODEL_LEN, plan["context"])
    kv = max(concurrency * min(GUARD_TOKENS_PER_CHECK, length), length) * plan["kv_bytes_per_token"]
    overhead = sum(-line["bytes"] for line in plan["budget"] if line["item"] in ("− activation peak",
                                                                                  "− non-torch memory"))
    return length, kv, plan["weights_bytes"] + kv + overhead + CUDA_GRAPH_BYTES


def split_utilization(guard_bytes: int, gpu_bytes: int, utilization: float | None, hint: str) -> float:
    """The main engine's --gpu-memory-utilization once the guard engines have taken `guard_bytes` of the GPU;
    an InputError when too little is left."""
    from llmprod.memory.releases import NEWEST, RELEASES

    share = guard_bytes / gpu_bytes
    left = round((utilization or RELEASES[NEWEST].gpu_memory_utilization) - share, 4)
    if left < MIN_MAIN_UTILIZATION:
        raise InputError(f"the guard engines need {guard_bytes / 2**30:.2f} GiB ({share:.0%} of the "
                         f"{gpu_bytes / 2**30:.1f} GiB GPU), leaving the main model --gpu-memory-utilization "
                         f"{left:.2f}", hint=hint)
    return left


def guard_share(models: list[str], concurrency: int) -> list[dict[str, Any]]:
    """What each guard engine would hold (estimate-memory --guard): its length, KV cache and planned total."""
    out = []
    for model in dict.fromkeys(models):
        length, kv, total = _footprint(model, concurrency)
        out.append({"model": model, "max_model_len": length, "kv_cache_memory_bytes": kv, "planned_bytes": total})
    return out


def plan_guard_engines(policy_doc: dict[str, Any], vllm_path: str, concurrency: int, gpu_bytes: int | None,
                       guard_gpu: int | None, main_utilization: float | None) -> tuple[list[GuardEngine], float | None]:
    """The guard engines and the main engine's --gpu-memory-utilization (None: unchanged, the guards have a GPU of
    their own). Exit 2 before anything starts when the split leaves the main model too little."""
    models = served_guard_models(policy_doc)
    engines: list[GuardEngine] = []
    for model in models:
        length, kv, total = _footprint(model, concurrency)
        options = EngineOptions(max_model_len=length, extra_args=("--kv-cache-memory", str(kv)))
        command = vllm_command(vllm_path, model, model, free_port(), options, "a guard model of the policy")
        if guard_gpu is not None:
            command = replace(command, env={**command.env, "CUDA_VISIBLE_DEVICES": str(guard_gpu)})
        engines.append(GuardEngine(model, command, kv, total, length))
    if not engines or guard_gpu is not None:
        return engines, None
    if gpu_bytes is None:
        raise InputError("cannot split the GPU between the model and its guard engines: its memory is unknown "
                         "(no nvidia-smi)", hint="pass --gpu-memory SIZE (e.g. 80GiB), or --guard-gpu N for a GPU "
                                                 "of their own")
    return engines, split_utilization(sum(e.total_bytes for e in engines), gpu_bytes, main_utilization,
                                      "lower --max-concurrency (the guards' KV cache scales with it), or give "
                                      "them --guard-gpu N")


def pointed_policy(policy_path: Path, engines: list[GuardEngine]) -> Path:
    """The policy file with each served Llama Guard model's `endpoint:` set: a file every gateway process reads."""
    import yaml

    doc = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    point_guards(doc, {e.model: e.endpoint for e in engines})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="llmprod-policy-", delete=False,
                                     encoding="utf-8") as handle:
        yaml.safe_dump(doc, handle, sort_keys=False)
    return Path(handle.name)


def gpu_total_bytes(index: int = 0) -> int | None:
    """The GPU's memory as nvidia-smi reports it, without initialising CUDA in this process; None without it."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", str(index)],
                          capture_output=True, text=True, check=False)
    try:
        return int(done.stdout.split()[0]) << 20
    except (IndexError, ValueError):
        return None
