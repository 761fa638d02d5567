"""One quantization run: validate everything, quantize into a temporary sibling, check, rename.

The output directory appears only when the checkpoint is complete and has been reloaded with
transformers and given finite logits. A failure or Ctrl-C at any point removes the temporary
directory and leaves an existing output untouched.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from llmprod import __version__, interrupts
from llmprod.errors import InputError, LlmprodError, NotFoundError, OperationFailed, require
from llmprod.libraryoutput import library_output
from llmprod.modelio import ModelRef, looks_offline, offline_error, resolve_model, share_modes
from llmprod.quantize import calibration
from llmprod.quantize.backends import BACKENDS, QuantizeJob
from llmprod.quantize.recipes import recipe_dict
from llmprod.quantize.spec import VLLM_GROUP_SIZES, QuantizeSpec, check_group_size
from llmprod.sources import hub_offline

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
TMP_MARKER = ".llmprod-tmp-"


@dataclass
class QuantizeHooks:
    """How a run reports progress; the CLI fills these in with Rich, tests may leave them empty."""

    stage: Callable[[str], None] = lambda message: None
    layer: Callable[[int, int], None] | None = None
    warn: Callable[[str], None] = lambda message: None


def check_output(spec: QuantizeSpec) -> None:
    out = spec.output
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file", hint="give a directory path")
    if out.exists() and any(out.iterdir()) and not spec.overwrite:
        raise InputError(f"--output {out} already exists and is not empty",
                         hint="choose another --output, or pass --overwrite to replace it")


def source_directory(ref: ModelRef) -> tuple[Path, str | None]:
    """A local directory holding the source model, and its hub revision (commit) if it came from one."""
    if ref.local_dir is not None:
        return ref.local_dir, None
    if hub_offline():
        raise offline_error(ref.name)
    hub = require("huggingface_hub", "model")
    try:
        path = Path(hub.snapshot_download(ref.name, revision=ref.revision,
                                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                          "*.jinja", "*.py"]))
    except Exception as exc:  # hub errors: offline, gated, missing
        if looks_offline(exc):
            raise offline_error(ref.name) from exc
        raise NotFoundError(f"cannot download {ref.name!r}: {str(exc).splitlines()[0][:300]}",
                            hint="check the id, the revision and HF_TOKEN (for gated models)") from exc
    return path, path.name


def quantized_linears(source_dir: Path, ignore: tuple[str, ...]) -> dict[str, int]:
    """{module name: in_features} of every Linear the recipe will quantize, from a meta-device model."""
    import re

    import torch
    transformers = require("transformers", "model")

    config = transformers.AutoConfig.from_pretrained(source_dir)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)

    def ignored(name: str) -> bool:
        for pattern in ignore:
            if pattern.startswith("re:"):
                if re.match(pattern[3:], name):
                    return True
            elif name == pattern or name.endswith("." + pattern):
                return True
        return False

    return {name: m.in_features for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not ignored(name)}


def weights_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def library_versions() -> dict[str, str]:
    versions = {"llmprod": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "llmcompressor", "compressed-tensors", "autoawq", "accelerate"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _pick_device(requested: str) -> str:
    if requested == "cpu":
        # Hide the GPUs before CUDA initialises: llm-compressor onloads to any accelerator it sees.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from llmprod.modelio import pick_device

    return pick_device(requested)


def quantize(spec: QuantizeSpec, hooks: QuantizeHooks | None = None) -> dict[str, Any]:
    """Everything that can be refused is refused before the model is loaded or anything is written."""
    hooks = hooks or QuantizeHooks()
    started = time.perf_counter()
    spec.validate()
    check_output(spec)
    if spec.settings.needs_data:
        calibration.check_source(spec.dataset)
    ref = resolve_model(spec.model, spec.revision)
    device = _pick_device(spec.device)
    if spec.gpus > 1:
        from llmprod.quantize.distributed import check_gpus

        check_gpus(spec.gpus, spec.device)
    backend = BACKENDS[spec.format]
    with library_output(spec.verbose, "quantize", llmcompressor=backend.uses_llmcompressor) as log:
        try:
            hooks.stage("checking the model and the recipe")
            source_dir, revision = source_directory(ref)
            check_group_size(quantized_linears(source_dir, spec.settings.ignore or ()), spec.settings)
            if spec.settings.info.grouped and spec.settings.group_size not in VLLM_GROUP_SIZES:
                hooks.warn(f"group size {spec.settings.group_size} is valid, but vLLM's Marlin kernels serve "
                           f"only {', '.join(map(str, VLLM_GROUP_SIZES))}")
            recipe = recipe_dict(spec)
            backend.validate(recipe)
            return _quantize(spec, hooks, backend, recipe, source_dir, revision, device, started)
        except (KeyboardInterrupt, LlmprodError):
            raise
        except Exception as exc:
            if log is None:
                raise
            raise OperationFailed(f"quantization failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
                                  hint=f"the libraries' log is {log}; --verbose shows it live") from exc


def _quantize(spec, hooks, backend, recipe, source_dir, revision, device, started) -> dict[str, Any]:
    import torch
    transformers = require("transformers", "model")

    s = spec.settings
    calib = None
    if s.needs_data:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source_dir)
        hooks.stage(f"reading calibration data from {spec.dataset}")
        calib = calibration.load_calibration(spec.dataset, tokenizer, spec.num_samples, spec.seq_len, spec.seed)
        if len(calib.samples) < spec.num_samples:
            hooks.warn(f"{spec.dataset} gave {len(calib.samples)} samples of up to {spec.seq_len} tokens, "
                       f"fewer than --num-samples {spec.num_samples}; using all of them")
    else:
        hooks.stage(f"{s.method.upper()} {s.scheme}: no calibration data is read (the weights are rounded as they are)")

    spec.output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{spec.output.name}{TMP_MARKER}", dir=spec.output.parent))
    try:
        torch.manual_seed(spec.seed)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        layout = f", group size {s.group_size}" if s.info.grouped else ""
        where = f"{spec.gpus} GPUs (data-parallel calibration)" if spec.gpus > 1 else device
        hooks.stage(f"quantizing with {backend.library} ({s.method.upper()} {spec.scheme_name()}{layout}) on {where}")
        t0 = time.perf_counter()
        phases: dict = {}
        job = QuantizeJob(spec, source_dir, calib, recipe, workdir, hooks.layer, phases)
        ranks = None
        with interrupts.latched():
            if spec.gpus > 1:
                from llmprod.quantize.distributed import run_distributed

                ranks = run_distributed(job)
            else:
                backend.run(job)
        quantize_seconds = time.perf_counter() - t0
        gc.collect()  # the backend's model is garbage now: free it before the reload check
        peak_gpu = torch.cuda.max_memory_allocated() if device == "cuda" else None
        if ranks is not None:
            peak_gpu = max((r["peak_gpu_memory_bytes"] for r in ranks), default=0) or None  # the busiest rank's
        peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        (workdir / "recipe.yaml").write_text(backend.record(spec, workdir))
        hooks.stage("reloading the checkpoint with transformers")
        t0 = time.perf_counter()
        check = reload_check(workdir)
        reload_seconds = time.perf_counter() - t0
        result = {
            "output": str(spec.output),
            "method": s.method,
            "format": spec.format,
            "scheme": s.scheme,
            "compressed_tensors_scheme": spec.scheme_name(),
            "weights": s.info.weights,
            "activations": s.info.activations or "16-bit",
            "bits": s.bits,
            "group_size": s.group_size,
            "symmetric": s.symmetric,
            "smoothquant": s.smoothquant,
            "kv_cache_scheme": s.kv_cache,
            "calibration_read": calib is not None,
            "gpus": spec.gpus,
            "ignore": list(s.ignore or ()),
            "size_bytes_before": weights_size(source_dir),
            "size_bytes_after": weights_size(workdir),
            "seconds": round(time.perf_counter() - started, 2),
            "quantize_seconds": round(quantize_seconds, 2),
            # Where the time went: one process's phases, or each rank's under --gpus (torchrun start-up is
            # quantize_seconds minus the slowest rank's phases).
            "phases_seconds": phases or None,
            "ranks": ranks,
            "reload_seconds": round(reload_seconds, 2),
            "peak_host_memory_bytes": peak_host,
            "peak_gpu_memory_bytes": peak_gpu,
            "device": device,
            "reload_check": check,
        }
        manifest = {
            **result,
            "source": {"model": spec.model, "revision": revision, "path": str(source_dir)},
            "calibration": ({**calib.describe(), "seq_len": spec.seq_len, "seed": spec.seed} if calib else None),
            "recipe": "recipe.yaml",
            "library_versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest.pop("output")
        (workdir / "llmprod.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (workdir / "README.md").write_text(model_card(spec, manifest))
        _replace_output(workdir, spec.output)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def reload_check(path: Path) -> dict[str, Any]:
    """Load the written checkpoint as a user would and run one forward pass: logits must be finite."""
    import torch

    from llmprod.modelio import load_causal_lm, load_tokenizer

    ref = resolve_model(str(path))
    model = load_causal_lm(ref, device="auto", dequantize=False)
    tokenizer = load_tokenizer(ref)
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = model(input_ids=ids.to(next(model.parameters()).device)).logits
    finite = bool(torch.isfinite(logits).all())
    if not finite:
        raise OperationFailed("the quantized checkpoint gives non-finite logits on reload; nothing was written",
                              hint="try more calibration samples, a smaller group size, or --bits 8")
    return {"loaded": True, "finite_logits": finite}


def _replace_output(workdir: Path, output: Path) -> None:
    share_modes(workdir)
    if output.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.llmprod-old-", dir=output.parent))
        output.rename(trash / "old")
        try:
            workdir.rename(output)
        except BaseException:
            (trash / "old").rename(output)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        workdir.rename(output)


def model_card(spec: QuantizeSpec, manifest: dict[str, Any]) -> str:
    s = spec.settings
    name = spec.output.name
    info = s.info
    fmt = BACKENDS[spec.format].serves_as.format(stored_as=info.stored_as)
    if info.hopper_kernel:
        fmt += (f"; on Hopper vLLM 0.26.0 runs it with {info.hopper_kernel}, as measured on an H200; "
                f"elsewhere: {info.hardware}")
    if s.info.grouped:
        weights = (f"{s.bits}-bit integer, group size {s.group_size}, "
                   f"{'symmetric' if s.symmetric else 'asymmetric (zero points)'}")
    else:
        weights = s.info.weights
    cal = manifest["calibration"]
    calibration_row = (f"{cal['samples']} samples of up to {spec.seq_len} tokens from `{spec.dataset}` "
                       f"(fingerprint `{cal['fingerprint']}`)" if cal else "none: the weights were rounded as they are")
    extra = ""
    if s.smoothquant is not None:
        extra += f"| SmoothQuant | strength {s.smoothquant}, before {s.method.upper()} |\n"
    if s.kv_cache:
        extra += "| KV cache | FP8 (E4M3), calibrated per-tensor scales: serve with `--kv-cache-dtype fp8` |\n"
    serve_flags = " --kv-cache-dtype fp8" if s.kv_cache else ""
    return f"""# {name}

{s.method.upper()} {spec.scheme_name()} quantization of `{spec.model}`, made with llmprod.

| | |
|---|---|
| method | {s.method.upper()} |
| weights | {weights} |
| activations | {s.info.activations or '16-bit (weight-only)'} |
{extra}| not quantized | {', '.join(s.ignore or ()) or 'nothing'} |
| format | {fmt} |
| hardware | {s.info.hardware} |
| calibration | {calibration_row} |
| size | {manifest['size_bytes_before']:,} bytes before, {manifest['size_bytes_after']:,} after |

## Serve it

```bash
vllm serve {spec.output}{serve_flags}          # quantization is read from config.json
llmprod serve {spec.output}       # vLLM or the embedded engine, behind the guarded gateway
```

## Check its quality

```bash
llmprod perplexity {spec.output} --baseline {spec.model} --max-increase 0.05
```

`recipe.yaml` is the recipe that produced these weights; `llmprod.json` records the source revision,
the calibration data's fingerprint, library versions, time and memory.
"""
