"""`llmprod serve`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.bundled import RECIPES, names
from llmprod.cli.options import (DataParallelOpt, GpuMemoryUtilizationOpt, JsonOpt, KvCacheDtypeOpt, MaxModelLenOpt,
                                 PipelineParallelOpt, ServeApiKeyOpt, TensorParallelOpt)
from llmprod.serve.spec import EngineOptions, ServeSpec

DEFAULTS = ServeSpec()

EXAMPLE = ("Example: [bold]llmprod serve ./llama-gptq --guardrails sandwich --port 8000 "
           "-- --enable-prefix-caching[/bold]")
# Arguments after `--` go to the engine unchanged.
CONTEXT = {"allow_extra_args": True}


class Engine(str, Enum):
    auto = "auto"
    vllm = "vllm"
    transformers = "transformers"


def serve(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Argument(help="Hub id or local directory to serve (omit with --upstream).",
                                                   show_default=False)] = None,
    engine: Annotated[Engine, typer.Option("--engine", case_sensitive=False, help="auto: vLLM when it and a GPU are present, else the "
                                           "embedded transformers engine.")] = Engine(DEFAULTS.engine),
    upstream: Annotated[Optional[str], typer.Option("--upstream", help="Front an OpenAI-compatible engine that is "
                                                    "already running; start none.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the gateway binds (loopback unless you say so).")]
    = DEFAULTS.host,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Gateway port.")] = DEFAULTS.port,
    guardrails: Annotated[Optional[str], typer.Option("--guardrails", help="A guardrail policy YAML, or a bundled "
                                                      f"one: {', '.join(names(RECIPES / 'guardrails'))} (default: "
                                                      "default).")] = None,
    no_guardrails: Annotated[bool, typer.Option("--no-guardrails", help="Check nothing.")] = False,
    api_key: ServeApiKeyOpt = None,
    api_keys: Annotated[Optional[Path], typer.Option(
        "--api-keys", help="A file of client keys (one per line, or YAML with name, key or sha256, "
        "requests_per_minute, tokens_per_minute); reloaded on SIGHUP.")] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", help="Requests in flight before 429.")]
    = DEFAULTS.max_concurrency,
    max_body_size: Annotated[str, typer.Option("--max-body-size", help="Largest request body, e.g. 4MiB.")]
    = f"{DEFAULTS.max_body_size >> 20}MiB",
    request_timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds the engine may stay silent "
                                                   "before 504.")] = DEFAULTS.request_timeout,
    max_model_len: MaxModelLenOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    kv_cache_dtype: KvCacheDtypeOpt = None,
    tensor_parallel_size: TensorParallelOpt = None,
    pipeline_parallel_size: PipelineParallelOpt = None,
    data_parallel_size: DataParallelOpt = None,
    vllm_bin: Annotated[Optional[str], typer.Option("--vllm-bin", help="The `vllm` executable of vLLM's own "
                                                    "environment.")] = None,
    served_model_name: Annotated[Optional[str], typer.Option("--served-model-name", help="Name clients use "
                                                             "(default: MODEL as given).")] = None,
    engine_timeout: Annotated[float, typer.Option("--engine-timeout", help="Seconds to wait for the engine's "
                                                  "/health.")] = DEFAULTS.engine_timeout,
    grace_period: Annotated[float, typer.Option("--grace-period", help="Seconds in-flight requests get at "
                                                "shutdown.")] = DEFAULTS.grace_period,
    engine_log: Annotated[Optional[Path], typer.Option("--engine-log", help="Where the engine's output goes.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Gateway processes sharing the port (one engine): "
                                         "for more streamed tokens a second than one core relays.")] = DEFAULTS.workers,
    guard_gpu: Annotated[Optional[int], typer.Option("--guard-gpu", min=0, help="With --engine vllm: serve the "
                                                     "policy's Llama Guard models on this GPU [default: the main "
                                                     "model's, its memory split between them].",
                                                     show_default=False)] = None,
    gpu_memory: Annotated[Optional[str], typer.Option("--gpu-memory", help="The GPU's memory for that split, with "
                                                      "its unit (80GiB) [default: what nvidia-smi reports].",
                                                      show_default=False)] = None,
    json_output: JsonOpt = False,
) -> None:
    """Serve a model with vLLM or the embedded engine behind a guarded OpenAI-compatible gateway."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        from llmprod.memory.sizes import parse_size
        from llmprod.serve.run import run_serve

        options = EngineOptions(max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                                kv_cache_dtype=kv_cache_dtype, tensor_parallel_size=tensor_parallel_size,
                                pipeline_parallel_size=pipeline_parallel_size, data_parallel_size=data_parallel_size,
                                extra_args=tuple(ctx.args))
        spec = ServeSpec(model=model, engine=engine.value, upstream=upstream, host=host, port=port,
                         guardrails=guardrails, no_guardrails=no_guardrails, api_key=api_key or None, api_keys=api_keys,
                         max_concurrency=max_concurrency, max_body_size=parse_size(max_body_size, "--max-body-size"),
                         request_timeout=request_timeout, served_model_name=served_model_name,
                         engine_options=options, vllm_bin=vllm_bin, engine_timeout=engine_timeout,
                         grace_period=grace_period, engine_log=engine_log, workers=workers, guard_gpu=guard_gpu,
                         gpu_memory=parse_size(gpu_memory, "--gpu-memory") if gpu_memory else None)
        run_serve(spec, out, on_ready=lambda doc: out.result(doc, render=lambda console: _render_ready(console, doc)))


def _render_ready(console, doc: dict) -> None:
    from rich.table import Table

    table = Table(title="llmprod serve: ready", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("OpenAI API", doc["url"])
    table.add_row("metrics", doc["metrics_url"])
    if doc["engine_pid"] is not None:
        table.add_row("engine", f"{doc['engine']} (pid {doc['engine_pid']}) on {doc['upstream']}, log {doc['engine_log']}")
        table.add_row("model", ", ".join(doc["models"]))
        startup = doc.get("engine_startup") or {}
        if doc.get("engine_version") or startup:
            table.add_row("vLLM", _vllm_line(doc.get("engine_version"), startup))
    else:
        table.add_row("upstream", doc["upstream"])
    table.add_row("auth", "bearer API key" if doc["auth"] != "none" else "none (set --api-key or LLMPROD_API_KEY)")
    table.add_row("guardrails", "\n".join(doc["guardrails"]))
    for guard in doc.get("guard_engines") or []:
        table.add_row("guard engine", f"{guard['model']} (pid {guard['pid']}) on {guard['endpoint']}, KV cache "
                                      f"{guard['kv_cache_memory_bytes'] / 2**30:.2f} GiB, planned "
                                      f"{guard['planned_bytes'] / 2**30:.2f} GiB in all, GPU {guard['gpu']}")
    console.print(table)
    console.print("Ctrl-C (or SIGTERM) stops: in-flight streams finish, then the engine stops.", style="dim")


def _vllm_line(version: str | None, s: dict) -> str:
    """vLLM's own start-up figures, in the words of `estimate-memory`'s table."""
    parts = [f"v{version}" if version else "version unknown"]
    if "weights_gib" in s:
        parts.append(f"weights {s['weights_gib']} GiB")
    if "kv_cache_gib" in s:
        parts.append(f"KV cache {s['kv_cache_gib']} GiB = {s.get('kv_cache_tokens', 0):,} tokens")
    if "max_concurrency" in s:
        parts.append(f"{s['max_concurrency']}x at {s['concurrency_context']:,} tokens")
    if s.get("kernels"):
        parts.append("kernels " + ", ".join(s["kernels"]))
    return "; ".join(parts)
