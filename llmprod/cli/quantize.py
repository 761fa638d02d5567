"""`llmprod quantize`: AWQ or GPTQ checkpoints that vLLM serves directly."""

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


class Format(str, Enum):
    compressed_tensors = "compressed-tensors"
    awq = "awq"


def quantize(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write (created atomically).")],
    method: Annotated[Optional[Method], typer.Option("--method", help="awq or gptq (or from --recipe).")] = None,
    bits: Annotated[Optional[int], typer.Option("--bits", help="4 or 8 (W4A16 / W8A16). Default 4.")] = None,
    group_size: Annotated[Optional[int], typer.Option("--group-size", help="Weights per scale; -1 per channel. Default 128.")] = None,
    symmetric: Annotated[
        Optional[bool],
        typer.Option("--symmetric/--asymmetric", help="Zero points or not. Default: GPTQ symmetric, AWQ asymmetric."),
    ] = None,
    format: Annotated[Format, typer.Option("--format", help="compressed-tensors (llm-compressor) or awq (AutoAWQ GEMM).")] = Format.compressed_tensors,
    recipe: RecipeOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", help="pile-val, wikitext2, c4, ultrachat, or a .txt/.jsonl/.parquet file.")] = "pile-val",
    num_samples: Annotated[int, typer.Option("--num-samples", help="Calibration samples.")] = 256,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per calibration sample.")] = 2048,
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
    """Quantize a model to 4 or 8 bits with AWQ or GPTQ (llm-compressor), ready for vLLM."""
    with command_output(json_output) as out:
        from llmprod.quantize import build_spec
        from llmprod.quantize import quantize as run_quantize
        from llmprod.quantize.run import QuantizeHooks

        spec = build_spec(model=model, output=output, method=method and method.value, bits=bits,
                          group_size=group_size, symmetric=symmetric, ignore=ignore, recipe=recipe,
                          format=format.value, dataset=dataset, num_samples=num_samples, seq_len=seq_len,
                          device=device.value, seed=seed, overwrite=overwrite, verbose=verbose,
                          revision=revision)
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
        "scheme": f"{result['scheme']}, group size {result['group_size']}",
        "not quantized": ", ".join(result["ignore"]) or "nothing",
        "size": f"{format_bytes(result['size_bytes_before'])} → {format_bytes(result['size_bytes_after'])}",
        "seconds": result["seconds"],
        "peak host memory": format_bytes(result["peak_host_memory_bytes"]),
    }
    if result["peak_gpu_memory_bytes"] is not None:
        rows["peak GPU memory"] = format_bytes(result["peak_gpu_memory_bytes"])
    rows["reload check"] = "finite logits" if result["reload_check"]["finite_logits"] else "FAILED"
    if "eval" in result:
        e = result["eval"]
        rows["perplexity"] = f"{e['perplexity']:.4f} vs {e['baseline_perplexity']:.4f} ({e['increase']:+.2%})"
    console.print(key_value_table(rows, title="quantized"))
