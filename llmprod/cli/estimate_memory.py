"""`llmprod estimate-memory`: will it fit, and what fits instead, as vLLM would allocate it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.cli.options import (GpuMemoryUtilizationOpt, JsonOpt, KvCacheDtypeOpt, MaxModelLenOpt,
                                 PipelineParallelOpt, RevisionOpt, TensorParallelOpt)

EXAMPLE = ("Example: [bold]llmprod estimate-memory meta-llama/Llama-3.1-8B-Instruct --weights w4a16 --gpu L4 "
           "--max-model-len 8k[/bold]")


def estimate_memory(
    model: Annotated[str, typer.Argument(help="A model directory, a config.json, or a hub id (fetches config.json only).",
                                         show_default=False)],
    max_model_len: MaxModelLenOpt = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Concurrent sequences of --max-model-len tokens "
                                       "that must fit (exit 1 when they do not).")] = 1,
    weights: Annotated[str, typer.Option("--weights", help="auto (from the checkpoint), bf16, fp16, fp8, int8, w4a16, w8a16, awq, gptq, or a quantize --scheme (w8a8-fp8, fp8-block, w8a8-int8, nvfp4a16).")] = "auto",
    group_size: Annotated[int, typer.Option("--group-size", min=1, help="Group size of group-quantized weights.")] = 128,
    kv_cache_dtype: KvCacheDtypeOpt = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="A GPU name: H100 (SXM), H100-PCIe, H200, B200, A100-80GB, A100-40GB, L40S, L4, A10G, RTX5090, RTX4090, RTX3090, MI300X. Also checks that vLLM loads the checkpoint's weight format there, and with which kernel (exit 1 when it does not).")] = None,
    gpu_memory: Annotated[Optional[str], typer.Option("--gpu-memory", help="GPU memory instead of --gpu, with its unit: 80GiB, 80GB, 81920MiB.")] = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    kv_cache_memory: Annotated[Optional[str], typer.Option("--kv-cache-memory", help="vLLM's --kv-cache-memory: the KV cache budget per GPU, with its unit (skips the GPU arithmetic).")] = None,
    tensor_parallel_size: TensorParallelOpt = None,
    pipeline_parallel_size: PipelineParallelOpt = None,
    block_size: Annotated[int, typer.Option("--block-size", min=1, help="vLLM's --block-size: tokens per KV block.")] = 16,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option("--max-num-batched-tokens", min=1, help="vLLM's scheduler token budget per step [default: vLLM's for the GPU and entry point: 8192 for vllm serve on 70 GiB and more (not A100), else 2048].", show_default=False)] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, help="vLLM's most sequences per step; its sampler warm-up sizes logits for this many [default: vLLM's: 1024 on 70 GiB and more (not A100), else 256].", show_default=False)] = None,
    entry_point: Annotated[str, typer.Option("--entry-point", help="How vLLM is started, which decides its batch defaults: serve (vllm serve, what llmprod serve starts) or python (vllm.LLM).", case_sensitive=False)] = "serve",
    guard: Annotated[Optional[list[str]], typer.Option("--guard", help="A guard model (Llama Guard) that `serve --engine "
                                                      "vllm` would run beside this one on the same GPU: its share is "
                                                      "taken first (repeatable).", show_default=False)] = None,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, help="With --guard: the gateway's "
                                                 "requests in flight, which the guards' KV cache is sized for.")] = 256,
    revision: RevisionOpt = None,
    vllm_version: Annotated[Optional[str], typer.Option("--vllm-version", help="Plan with this vLLM release's defaults [default: the vLLM on PATH or --vllm-bin, else the newest llmprod knows].", show_default=False)] = None,
    vllm_bin: Annotated[Optional[str], typer.Option("--vllm-bin", help="The vLLM whose release decides the defaults.")] = None,
    vllm_log: Annotated[Optional[Path], typer.Option("--vllm-log", help="A `vllm serve` output: plan with its settings and set each figure beside vLLM's.")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Estimate GPU memory (weights + KV cache + overhead) as vLLM would allocate it; exit 1 when it does not fit."""
    from llmprod.cli.exits import command_output

    with command_output(json_output) as out:
        from dataclasses import replace

        from llmprod.errors import CheckFailed
        from llmprod.memory.plan import MemorySpec, estimate, which_vllm
        from llmprod.memory.sizes import parse_size

        spec = MemorySpec(
            model=model, context=max_model_len, batch=batch, weights=weights, group_size=group_size,
            kv_cache_dtype=kv_cache_dtype or "auto", gpu=gpu,
            gpu_memory_bytes=parse_size(gpu_memory, "--gpu-memory") if gpu_memory else None,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=parse_size(kv_cache_memory, "--kv-cache-memory") if kv_cache_memory else None,
            tp=tensor_parallel_size or 1, pp=pipeline_parallel_size or 1, block_size=block_size,
            max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
            entry_point=entry_point.lower(), revision=revision,
        )
        guards = None
        if guard:
            spec, guards = _with_guards(spec, guard, max_concurrency)
        if vllm_log is not None:  # the log names its release and settings
            from llmprod.memory.versus import estimate_against_log

            result = estimate_against_log(spec, vllm_log)
        else:
            version, version_from = which_vllm(vllm_version, vllm_bin)
            result = estimate(replace(spec, vllm_version=version, vllm_version_from=version_from))
        if guards is not None:
            result["guard_engines"] = guards
        out.result(result, lambda console: _render(console, result))
        if not result["fits"] or result["loads"] is False:  # a gate: CI fails on the exit code alone
            raise CheckFailed(result["reason"])


def _with_guards(spec, models: list[str], concurrency: int):
    """The spec with the guard engines' share of the GPU taken from vLLM's utilization, as `serve` splits it."""
    from dataclasses import replace

    from llmprod.errors import InputError
    from llmprod.memory.plan import gpu_of
    from llmprod.serve.guards import guard_share, split_utilization

    _, total = gpu_of(spec)
    if total is None:
        raise InputError("--guard needs the GPU's memory to split", hint="pass --gpu NAME or --gpu-memory SIZE")
    guards = guard_share(models, concurrency)
    utilization = split_utilization(sum(g["planned_bytes"] for g in guards), total, spec.gpu_memory_utilization,
                                    "lower --max-concurrency, or plan the guards on a GPU of their own")
    return replace(spec, gpu_memory_utilization=utilization), guards


def _render(console, r: dict) -> None:
    from rich.table import Table

    from llmprod.output import format_bytes

    layers = ", ".join(f"{n} × {k}" for k, n in r["layer_types"].items())
    console.print(f"[bold]{r['model']}[/bold] ({r['model_type']}, {r['layers']} layers: {layers}); "
                  f"tp {r['tp']}, pp {r['pp']} (layers per stage {r['layers_per_stage']})")
    v = r["vllm"]
    console.print(f"as vLLM {v['version']} would allocate it ({v['from']}); served in {v['dtype']}")
    if v["note"]:
        console.print(v["note"], style="yellow")
    budget = Table(title="memory per GPU", title_justify="left", show_header=False)
    budget.add_column()
    budget.add_column(justify="right")
    budget.add_column(style="dim")
    budget.add_row("weights", format_bytes(r["weights_bytes"]),
                   f"{r['weights_format']}, {r['parameters'] / 1e9:.2f} B parameters, {r['weights_estimated']}")
    for line in r["budget"]:
        budget.add_row(line["item"], format_bytes(abs(line["bytes"])), line["how"])
    console.print(budget)
    kv = Table(title="KV cache (PagedAttention)", title_justify="left", show_header=False)
    kv.add_column()
    kv.add_column(justify="right")
    kv.add_row("KV bytes per token (all layers on this GPU)", f"{r['kv_bytes_per_token']:,}")
    kv.add_row(f"blocks of {r['block_size']} tokens", f"{r['num_blocks']:,} × {format_bytes(r['page_bytes'])} "
               f"× {r['group_size']} layers ({r['kv_cache_groups']} group(s))")
    kv.add_row("GPU KV cache size (as vLLM logs it: concurrency × max model length)", f"{r['kv_cache_tokens']:,} tokens")
    kv.add_row(f"KV pool ({r['num_blocks']:,} blocks × {r['block_size']} tokens per layer group)",
               f"{r['kv_pool_tokens']:,} tokens")
    kv.add_row(f"maximum concurrency for {r['context']:,} tokens per request", f"{r['max_concurrency']:.2f}x")
    kv.add_row(f"longest context at batch {r['batch']}", f"{r['max_context']:,} tokens")
    paging = r["paging"]
    kv.add_row(f"reserved contiguously: {r['batch']} × {r['context']:,} tokens × KV bytes per token",
               format_bytes(paging["contiguous_bytes"]))
    kv.add_row(f"PagedAttention: {r['batch']} × {r['blocks_per_request']:,} blocks (sliding layers: their window)",
               format_bytes(paging["paged_bytes"]))
    console.print(kv)
    check = r.get("preflight")
    if check:
        style = "green" if check["loads"] else "red"
        console.print(f"[{style}]{'loads' if check['loads'] else 'does not load'}[/{style}]: {check['reason']}"
                      + (f"; weights: {check['weight_memory']}" if check.get("weight_memory") else ""))
        console.print(f"kernel table {check['table']}: {check['source']}", style="dim")
    console.print(f"batch settings: max_num_batched_tokens {r['max_num_batched_tokens']:,}, max_num_seqs "
                  f"{r['max_num_seqs']:,} ({r['batch_settings_from']['max_num_batched_tokens']})", style="dim")
    verdict = "[green]fits[/green]" if r["fits"] else "[red]does not fit[/red]"
    console.print(f"{verdict}: {r['reason']}; largest batch at this length: {r['max_batch']}; "
                  f"longest context at batch {r['batch']}: {r['max_context']:,}")
    for w in r.get("what_if", []):
        console.print(f"  what if {w['change']}: {w['kv_cache_tokens']:,} tokens, concurrency "
                      f"{w['max_concurrency']:.2f}x, longest context {w['max_context']:,}")
    for g in r.get("guard_engines") or []:
        console.print(f"guard engine {g['model']}: {format_bytes(g['planned_bytes'])} of the GPU "
                      f"(KV cache {format_bytes(g['kv_cache_memory_bytes'])} for its checks, --max-model-len "
                      f"{g['max_model_len']:,}); this model gets --gpu-memory-utilization "
                      f"{r['vllm']['gpu_memory_utilization']}")
    if "vs_vllm" in r:
        _render_versus(console, r["vs_vllm"])


def _render_versus(console, v: dict) -> None:
    from rich.table import Table

    from llmprod.output import format_bytes

    s = v["settings"]
    table = Table(title=f"beside vLLM {s['vllm']}'s start-up lines ({v['log']}): max_model_len {s['max_model_len']:,}, "
                        f"KV {s['kv_cache_dtype']}, tp {s['tp']}, utilization {s['gpu_memory_utilization']}",
                  title_justify="left")
    for column in ("figure", "llmprod", "vLLM", "ratio"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in v["rows"]:
        show = {"bytes": format_bytes, "tokens": "{:,}".format, "x": "{:.2f}x".format}[row["unit"]]
        cells = [show(row[k]) if row[k] is not None else "-" for k in ("predicted", "vllm")]
        table.add_row(row["figure"], *cells, f"{row['ratio']:.4f}" if row["ratio"] is not None else "-")
    console.print(table)
    if v["cuda_graph_bytes_logged"]:
        console.print(f"vLLM captured {format_bytes(v['cuda_graph_bytes_logged'])} of CUDA graphs"
                      + (f"; kernels: {', '.join(v['kernels'])}" if v["kernels"] else ""), style="dim")
