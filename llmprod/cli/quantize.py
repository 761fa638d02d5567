"""`llmprod quantize`: AWQ, GPTQ, INT8/FP8 W8A8 and NVFP4 checkpoints that vLLM serves directly."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmprod.cli.exits import command_output
from llmprod.cli.options import Device, DeviceOpt, JsonOpt, ModelArg, RecipeOpt, RevisionOpt, SeedOpt, VerboseOpt

EXAMPLE = "Example: [bold]llmprod quantize meta-llama/Llama-3.2-1B-Instruct --method awq --output llama-awq[/bold]"


class Method(str, Enum):
    awq = "awq"
    gptq = "gptq"
    rtn = "rtn"


class SchemeChoice(str, Enum):
    w4a16 = "w4a16"
    w8a16 = "w8a16"
    w8a8_int8 = "w8a8-int8"
    w8a8_fp8 = "w8a8-fp8"
    fp8_block = "fp8-block"
    nvfp4a16 = "nvfp4a16"


class KvCacheScheme(str, Enum):
    fp8 = "fp8"


class Format(str, Enum):
    compressed_tensors = "compressed-tensors"
    awq = "awq"


def quantize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write (created atomically).")],
    method: Annotated[Optional[Method], typer.Option(
        "--method", case_sensitive=False, help="gptq, awq or rtn (round to nearest, no data). Default: the scheme's only one.")] = None,
    scheme: Annotated[Optional[SchemeChoice], typer.Option(
        "--scheme", case_sensitive=False, help="Weight/activation format. Default w4a16.")] = None,
    bits: Annotated[Optional[int], typer.Option("--bits", help="4 or 8: shorthand for --scheme w4a16 / w8a16.")] = None,
    smoothquant: Annotated[Optional[float], typer.Option(
        "--smoothquant", metavar="STRENGTH",
        help="SmoothQuant's strength (0-1) before the quantizer, for w8a8-int8 (0.8 there by default with GPTQ; 0: off).",
    )] = None,
    kv_cache_scheme: Annotated[Optional[KvCacheScheme], typer.Option(
        "--kv-cache-scheme", case_sensitive=False, help="fp8: calibrated KV cache scales, for vLLM's --kv-cache-dtype fp8.")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="Data-parallel calibration over N GPUs of this host (torchrun).")] = 1,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (recipe, calibration, memory, time) without loading the weights.")] = False,
    group_size: Annotated[Optional[int], typer.Option("--group-size", help="Weights per scale; -1 per channel. Default 128.")] = None,
    symmetric: Annotated[
        Optional[bool],
        typer.Option("--symmetric/--asymmetric", help="Zero points or not. Default: GPTQ symmetric, AWQ asymmetric."),
    ] = None,
    format: Annotated[Format, typer.Option("--format", case_sensitive=False, help="compressed-tensors (llm-compressor) or awq (AutoAWQ GEMM).")] = Format.compressed_tensors,
    recipe: RecipeOpt = None,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", help="pile-val (default), wikitext2, c4, ultrachat, or a .txt/.jsonl/.parquet file.")] = None,
    num_samples: Annotated[Optional[int], typer.Option("--num-samples", help="Calibration samples. Default 256.")] = None,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per calibration sample. Default 2048.")] = None,
    ignore: Annotated[
        Optional[list[str]],
        typer.Option("--ignore", help="Layers left unquantized (repeatable; 're:' for a regex). Default lm_head."),
    ] = None,
    device: DeviceOpt = Device.auto,
    revision: RevisionOpt = None,
    seed: SeedOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output.")] = False,
    evaluate: Annotated[bool, typer.Option("--eval", help="Then measure perplexity against the original.")] = False,
    eval_dataset: Annotated[str, typer.Option("--eval-dataset", help="Text for --eval: wikitext2 or a local file.")] = "wikitext2",
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Quantize a model for vLLM with llm-compressor: GPTQ/AWQ 4- or 8-bit weights, INT8 or FP8 W8A8, NVFP4."""
    with command_output(json_output) as out:
        from llmprod.quantize import build_spec
        from llmprod.quantize import quantize as run_quantize
        from llmprod.quantize.run import QuantizeHooks

        spec = build_spec(model=model, output=output, method=method and method.value, bits=bits,
                          scheme=scheme and scheme.value, smoothquant=smoothquant,
                          kv_cache=kv_cache_scheme and kv_cache_scheme.value,
                          group_size=group_size, symmetric=symmetric, ignore=ignore, recipe=recipe,
                          format=format.value, dataset=dataset, num_samples=num_samples, seq_len=seq_len,
                          device=device.value, seed=seed, overwrite=overwrite, verbose=verbose,
                          revision=revision, gpus=gpus)
        if dry_run:
            from llmprod.quantize.plan import plan

            result = plan(spec)
            out.result(result, lambda console: _render_plan(console, result))
            return
        with out.progress() as progress:
            task = progress.add_task("preparing", total=None)

            def on_layer(i: int, n: int) -> None:
                progress.update(task, completed=i - 1, total=n, description=f"calibrating layer {i}/{n}")

            def stage(message: str) -> None:
                progress.update(task, description=message)
                out.note(message)

            result = run_quantize(spec, QuantizeHooks(stage=stage, layer=on_layer, warn=out.warn))
        if evaluate:
            result["eval"] = _evaluate(out, spec, eval_dataset)
        out.result(result, lambda console: _render(console, result))


def _evaluate(out, spec, dataset: str) -> dict:
    from llmprod.evaluate import PerplexitySpec, gate, measure_perplexity

    out.note(f"--eval: perplexity of {spec.output} against {spec.model} on {dataset}")
    common = dict(dataset=dataset, seq_len=spec.seq_len, device=spec.device)
    quantized = measure_perplexity(PerplexitySpec(model=str(spec.output), **common))
    base = measure_perplexity(PerplexitySpec(model=spec.model, **common))
    return {"perplexity": quantized.perplexity, "baseline_perplexity": base.perplexity,
            "increase": gate(quantized, base, None).increase, "dataset": quantized.dataset,
            "tokens": quantized.tokens}


def _render(console, result: dict) -> None:
    from llmprod.output import format_bytes, key_value_table

    rows = {
        "output": result["output"],
        "method / format": f"{result['method'].upper()} / {result['format']}",
        "scheme": result["compressed_tensors_scheme"] + (f", group size {result['group_size']}"
                                                         if result["group_size"] is not None else ""),
        "weights / activations": f"{result['weights']} / {result['activations']}",
        "not quantized": ", ".join(result["ignore"]) or "nothing",
        "size": f"{format_bytes(result['size_bytes_before'])} → {format_bytes(result['size_bytes_after'])}",
        "seconds": result["seconds"],
        "peak host memory": format_bytes(result["peak_host_memory_bytes"]),
    }
    if result["peak_gpu_memory_bytes"] is not None:
        rows["peak GPU memory"] = format_bytes(result["peak_gpu_memory_bytes"])
    if result["smoothquant"] is not None:
        rows["SmoothQuant"] = f"strength {result['smoothquant']}"
    if result["kv_cache_scheme"]:
        rows["KV cache"] = "FP8, calibrated scales (serve with --kv-cache-dtype fp8)"
    if not result["calibration_read"]:
        rows["calibration"] = "none read: round to nearest from the weights"
    rows["reload check"] = "finite logits" if result["reload_check"]["finite_logits"] else "FAILED"
    if "eval" in result:
        e = result["eval"]
        rows["perplexity"] = f"{e['perplexity']:.4f} vs {e['baseline_perplexity']:.4f} ({e['increase']:+.2%})"
    console.print(key_value_table(rows, title="quantized"))


def _render_plan(console, plan: dict) -> None:
    from llmprod.output import format_bytes, key_value_table

    cal = plan["calibration"]
    mem = plan["memory"]
    rows = {
        "model": f"{plan['model']} ({plan['parameters'] / 1e9:.2f} B parameters, {plan['layers']} layers)",
        "scheme": f"{plan['method'].upper()} {plan['compressed_tensors_scheme']} ({plan['weights']} / {plan['activations']})",
        "modifiers": " → ".join(plan["modifiers"]),
        "calibration": (f"{cal['samples']} samples × {cal['seq_len']} tokens = {cal['tokens']:,} tokens"
                        + (f" over {plan['gpus']} GPUs" if plan["gpus"] > 1 else "")) if cal else "none read",
        "checkpoint": f"{format_bytes(plan['size_bytes_before'])} → about {format_bytes(plan['size_bytes_after'])}",
        "peak host memory": f"about {format_bytes(mem['host_bytes'])} ({mem['host_note']})",
        "peak GPU memory": f"about {format_bytes(mem['gpu_bytes'])} per GPU",
        "time": plan["time"]["note"],
    }
    console.print(key_value_table(rows, title="quantize plan (--dry-run: nothing loaded or written)"))
