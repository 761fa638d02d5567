"""`llmprod perplexity`: the standard perplexity check, with a CI gate against a baseline."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from llmprod.cli.exits import command_output
from llmprod.cli.options import (ApiKeyOpt, Device, DeviceOpt, GpuMemoryUtilizationOpt, JsonOpt, ModelArg,
                                 RevisionOpt, TensorParallelOpt)
from llmprod.errors import CheckFailed, InputError

EXAMPLE = ("Example: [bold]llmprod perplexity llama-awq --baseline meta-llama/Llama-3.2-1B-Instruct "
           "--max-increase 0.05[/bold]")


def perplexity(
    model: ModelArg,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Model to compare with (the unquantized one).")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="wikitext2, c4, or a local .txt / .jsonl file.")] = "wikitext2",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per window.")] = 2048,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Smaller than --seq-len: sliding windows.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Evaluate only the first N tokens.")] = None,
    batch_size: Annotated[str, typer.Option(
        "--batch-size", help="Windows per forward pass; auto: 1 on a CPU; on a GPU about 8,192 tokens a pass for a hidden size of 2,048, fewer for wider models.")] = "auto",
    device: DeviceOpt = Device.auto,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    max_increase: Annotated[
        Optional[float],
        typer.Option("--max-increase", help="With --baseline: exit 1 when (ppl - base) / base exceeds this, e.g. 0.05."),
    ] = None,
    revision: RevisionOpt = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="transformers (loads the model), or vllm: launched, scored from its prompt logprobs, "
        "stopped: the kernels it serves with.")] = "transformers",
    upstream: Annotated[Optional[str], typer.Option(
        "--upstream", help="A vLLM already serving MODEL (its /v1 base URL): score there.")] = None,
    baseline_upstream: Annotated[Optional[str], typer.Option(
        "--baseline-upstream", help="With --upstream: the vLLM serving --baseline.")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", help="With --upstream: the name the server uses for MODEL (default MODEL).")] = None,
    vllm_bin: Annotated[Optional[str], typer.Option("--vllm-bin", help="The vllm executable for --engine vllm.")] = None,
    tensor_parallel_size: TensorParallelOpt = None,
    gpu_memory_utilization: GpuMemoryUtilizationOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Served engines: windows in flight.")] = 8,
    api_key: ApiKeyOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Measure perplexity, optionally against a baseline, and gate on the increase."""
    with command_output(json_output) as out:
        from llmprod.evaluate import PerplexitySpec, gate, measure_perplexity

        if max_increase is not None and (baseline is None or not math.isfinite(max_increase)):
            raise InputError("--max-increase needs --baseline and a finite fraction",
                             hint="e.g. --baseline ORIGINAL_MODEL --max-increase 0.05 for a 5% limit")
        if upstream and baseline and not baseline_upstream:
            raise InputError("--baseline with --upstream: the baseline needs a server too",
                             hint="pass --baseline-upstream URL (a vLLM serving the baseline), or use --engine vllm")
        if baseline_upstream and not upstream:
            raise InputError("--baseline-upstream goes with --upstream", hint="add --upstream, or drop it")
        batch = _batch_size(batch_size)
        served = dict(engine=engine, vllm_bin=vllm_bin, tensor_parallel_size=tensor_parallel_size,
                      gpu_memory_utilization=gpu_memory_utilization,
                      concurrency=concurrency, api_key=api_key)
        specs = [PerplexitySpec(model, dataset, seq_len, stride, max_tokens, batch, device.value, dtype, revision,
                                upstream=upstream, served_model_name=served_model_name, **served)]
        if baseline:
            specs.append(PerplexitySpec(baseline, dataset, seq_len, stride, max_tokens, batch, device.value,
                                        dtype, None, upstream=baseline_upstream, **served))
        for spec in specs:
            spec.validate()
        results = []
        with out.progress() as progress:
            for spec in specs:
                task = progress.add_task(f"perplexity of {spec.model}", total=None)

                def on_progress(done: int, total: int, task=task) -> None:
                    elapsed = progress.tasks[task].elapsed or 0
                    rate = f" ({done / elapsed:,.0f} tokens/s)" if elapsed else ""
                    progress.update(task, completed=done, total=total,
                                    description=f"perplexity of {spec.model}{rate}")

                results.append(measure_perplexity(spec, on_progress))
        for result in results[:1]:  # a baseline reads the same text in the same windows
            if result.tokens_dropped > 0.1 * result.total_tokens:
                out.warn(f"{result.tokens_dropped:,} of the {result.total_tokens:,} tokens of {result.dataset} "
                         f"({result.tokens_dropped / result.total_tokens:.0%}) did not fill a window of --seq-len "
                         f"{seq_len} and were not scored; a smaller --seq-len scores more of it")
        data = results[0].to_dict()
        verdict = None
        if baseline:
            verdict = gate(results[0], results[1], max_increase)
            data.update(baseline=results[1].to_dict(), increase=verdict.increase,
                        max_increase=max_increase, passed=verdict.passed)
        out.result(data, lambda console: _render(console, results, verdict))
        if verdict is not None and not verdict.passed:
            raise CheckFailed(verdict.describe(results[0].perplexity, results[1].perplexity),
                              hint="the quantized model lost more quality than --max-increase allows")


def _batch_size(value: str) -> int | None:
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--batch-size {value!r} is not a number", hint="give a whole number of windows, or auto") from None


def _render(console, results, verdict) -> None:
    from rich.table import Table

    from llmprod.output import format_value

    table = Table(title="perplexity", title_justify="left")
    table.add_column("")
    for r in results:
        table.add_column(r.model if r is results[0] else f"baseline: {r.model}", justify="right")
    rows = [("perplexity", "perplexity"), ("mean NLL (nats)", "mean_nll"), ("bits per byte", "bits_per_byte"),
            ("tokens scored", "tokens"), ("windows", "windows"), ("tokens dropped", "tokens_dropped"),
            ("tokens/s", "tokens_per_s"), ("seconds", "seconds"), ("device / dtype", None), ("engine", "engine")]
    for label, key in rows:
        cells = [f"{r.device} / {r.dtype}" if key is None else format_value(getattr(r, key)) for r in results]
        table.add_row(label, *cells)
    console.print(table)
    for r in results:
        kernels = (r.engine_details or {}).get("kernels")
        if kernels:
            console.print(f"{r.model}: scored by {r.engine} with {', '.join(kernels)}")
    console.print(f"dataset: {results[0].dataset}; seq-len {results[0].seq_len}, stride {results[0].stride}")
    if verdict is not None:
        style = "green" if verdict.passed else "red"
        console.print(f"[{style}]{verdict.describe(results[0].perplexity, results[1].perplexity)}[/{style}]")
