"""Shared option types, so command signatures read like prose."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from llmprod.bundled import RECIPES, names


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout; logs go to stderr.")
]
ModelArg = Annotated[
    str, typer.Argument(help="A Hugging Face hub id (org/name) or a local model directory.", show_default=False)
]
DeviceOpt = Annotated[
    Device, typer.Option("--device", case_sensitive=False, help="Where to run: auto picks a GPU when there is one.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend libraries' own logging.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (sample selection, ...).")]
ServeApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="LLMPROD_API_KEY", show_envvar=True,
                                                       help="Bearer key clients must send; the gateway checks it.")]
ApiKeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="LLMPROD_API_KEY", show_envvar=True,
                                                  help="Bearer key sent to the server (an llmprod gateway or vLLM "
                                                       "started with --api-key).")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of a hub model "
                                                    "(a local directory has none).")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="A guardrail policy YAML, or a bundled one: "
                                        f"{', '.join(names(RECIPES / 'guardrails'))}.")]
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", help="A recipe YAML, or a bundled one: "
                                                  f"{', '.join(names(RECIPES / 'quantize'))}.")]


# -- vLLM's concepts, under vLLM's names (our older short names stay as aliases) ----------------------------
def _tokens(value: str) -> int:
    from llmprod.errors import InputError
    from llmprod.memory.sizes import parse_tokens

    try:
        return parse_tokens(value, "")
    except InputError as err:
        raise typer.BadParameter(err.one_line().strip()) from None


def _kv_cache_dtype(value: str) -> str:
    from llmprod.memory.plan import KV_DTYPE_ALIASES, VLLM_KV_CACHE_DTYPES

    name = KV_DTYPE_ALIASES.get(value.strip().lower(), value.strip().lower())
    if name not in VLLM_KV_CACHE_DTYPES:
        raise typer.BadParameter(f"{value!r} is not one of vLLM's: {', '.join(VLLM_KV_CACHE_DTYPES)} (bf16, fp16 "
                                 "for short)")
    return name


TensorParallelOpt = Annotated[Optional[int], typer.Option(
    "--tensor-parallel-size", "-tp", "--tp", min=1, show_default=False,
    help="vLLM's --tensor-parallel-size: GPUs one model is split across [default: 1].")]
PipelineParallelOpt = Annotated[Optional[int], typer.Option(
    "--pipeline-parallel-size", "-pp", "--pp", min=1, show_default=False,
    help="vLLM's --pipeline-parallel-size: stages of layers, a GPU group each [default: 1].")]
DataParallelOpt = Annotated[Optional[int], typer.Option(
    "--data-parallel-size", "-dp", "--dp", min=1, show_default=False,
    help="vLLM's --data-parallel-size: engine replicas of tp × pp GPUs each on this host, load-balanced by vLLM "
         "itself [default: 1].")]
MaxModelLenOpt = Annotated[Optional[int], typer.Option(
    "--max-model-len", "--context", parser=_tokens, metavar="TOKENS", show_default=False,
    help="vLLM's --max-model-len: tokens per sequence, prompt and output; 8k = 8,000, 8K = 8,192 "
         "[default: the model's length].")]
GpuMemoryUtilizationOpt = Annotated[Optional[float], typer.Option(
    "--gpu-memory-utilization", min=0.01, max=1.0, show_default=False,
    help="vLLM's --gpu-memory-utilization: the share of the GPU it may use [default: the vLLM release's].")]
KvCacheDtypeOpt = Annotated[Optional[str], typer.Option(
    "--kv-cache-dtype", parser=_kv_cache_dtype, metavar="DTYPE", show_default=False,
    help="vLLM's --kv-cache-dtype: auto (the model's dtype), bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2, ... "
         "[default: auto].")]
