"""Quantization backends behind one small interface, registered by output format.

    compressed-tensors  llm-compressor `oneshot`: GPTQModifier, or AWQModifier + QuantizationModifier.
                        Pack-quantized W4A16/W8A16, served by vLLM's Marlin/Machete kernels.
    awq                 AutoAWQ (deprecated upstream, still quantizes on CPU with transformers 5):
                        the legacy AWQ GEMM format that vLLM, TGI and others load.

A backend loads the source model itself (each library has its own loader), calibrates on the given
token ids, and saves weights + config into `workdir`. Everything around it (validation, the atomic
output directory, manifest, reload check) is the backends' common ground in `run.py`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from llmprod import interrupts
from llmprod.errors import ConfigError, require
from llmprod.quantize.calibration import CalibrationSet
from llmprod.quantize.spec import QuantizeSpec

LayerProgress = Callable[[int, int], None]  # (layer index reached, number of layers)


@dataclass(frozen=True)
class QuantizeJob:
    spec: QuantizeSpec
    source_dir: Path
    calibration: CalibrationSet | None  # None: a data-free scheme (RTN), nothing was read
    recipe: dict
    workdir: Path
    on_layer: LayerProgress | None = None
    phases: dict | None = None  # filled with seconds per phase (load, oneshot, save) where the backend can


class QuantizationBackend(Protocol):
    """One way of writing a checkpoint (`--format`): what the runner asks of it, and nothing else."""

    name: str
    library: str  # the distribution whose version goes into llmprod.json
    uses_llmcompressor: bool  # its logs go through llm-compressor's logger (kept off stderr unless --verbose)
    serves_as: str  # what the model card says about the format and how vLLM serves it

    def validate(self, recipe: dict) -> None:
        """Refuse a recipe the library would refuse, before anything is loaded or written."""

    def run(self, job: QuantizeJob) -> None: ...

    def record(self, spec: QuantizeSpec, workdir: Path) -> str:
        """What goes into the checkpoint's recipe.yaml: how these weights were made."""


def _track_layers(model, on_layer: LayerProgress | None) -> list:
    """Forward pre-hooks on the decoder layers: calibration runs them in order, one after another."""
    layers = None
    for module in model.modules():
        if type(module).__name__.endswith("ModuleList") and len(module) and type(module[0]).__name__.endswith(
                "DecoderLayer"):
            layers = module
            break
    if layers is None:
        return []
    n = len(layers)

    def pre_hook(i: int):
        def hook(*_):
            interrupts.check()  # a Ctrl-C a library swallowed is raised again at the next layer
            if on_layer is not None:
                on_layer(i + 1, n)
        return hook

    return [layer.register_forward_pre_hook(pre_hook(i)) for i, layer in enumerate(layers)]


class LlmCompressorBackend:
    name = "compressed-tensors"
    library = "llmcompressor"
    uses_llmcompressor = True
    serves_as = "compressed-tensors ({stored_as}); vLLM reads the format from config.json"

    def validate(self, recipe: dict) -> None:
        """The library's own whole-recipe validation (AWQ needs a quantizer after it)."""
        from llmcompressor.recipe import Recipe

        try:
            Recipe.from_dict(recipe)
        except Exception as exc:  # pydantic ValidationError or ValueError from the modifiers
            raise ConfigError(f"llm-compressor rejects the recipe: {' '.join(str(exc).split())[:300]}",
                              hint="check the modifier arguments in your --recipe") from exc

    def record(self, spec: QuantizeSpec, workdir: Path) -> str:
        from llmprod.quantize.recipes import recipe_yaml

        return recipe_yaml(spec)

    def run(self, job: QuantizeJob) -> None:
        """One process, or one rank of `torchrun` (llmprod.quantize.distributed) with its share of the samples."""
        transformers = require("transformers", "model")
        require("llmcompressor", "quantize")
        from compressed_tensors.offload import load_offloaded_model
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.recipe import Recipe

        from llmprod.quantize.compat import forget_traced_namespaces, skip_pinning_without_accelerator

        rank, world = _rank_and_world()
        phases = job.phases if job.phases is not None else {}
        t0 = time.perf_counter()
        # Loaded on the CPU, spilling to disk what host memory cannot hold ("auto_offload"); under torchrun
        # rank 0 loads and shares the weights with the other ranks. llm-compressor's sequential pipeline then
        # onloads one decoder layer at a time to the accelerator: peak GPU memory is about one layer plus
        # activations, whatever the model's size.
        with load_offloaded_model():
            model = transformers.AutoModelForCausalLM.from_pretrained(job.source_dir, dtype="auto",
                                                                      device_map="auto_offload")
        tokenizer = transformers.AutoTokenizer.from_pretrained(job.source_dir)
        phases["load"] = round(time.perf_counter() - t0, 2)
        data_args = {}
        if job.calibration is not None:
            samples = _partition(job.calibration.samples, rank, world)
            data = Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(x) for x in samples]})
            data_args = dict(dataset=data, max_seq_length=job.spec.seq_len, num_calibration_samples=len(samples),
                             shuffle_calibration_samples=False,  # already chosen by --seed
                             pipeline="sequential")
        hooks = _track_layers(model, job.on_layer)
        try:
            t0 = time.perf_counter()
            with skip_pinning_without_accelerator(), forget_traced_namespaces():
                oneshot(model=model, recipe=Recipe.from_dict(job.recipe), **data_args)
            phases["oneshot"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            model.save_pretrained(job.workdir, save_compressed=True)  # under torchrun only rank 0 writes
            if rank == 0:
                tokenizer.save_pretrained(job.workdir)
            phases["save"] = round(time.perf_counter() - t0, 2)
        finally:
            for hook in hooks:
                hook.remove()
            # llm-compressor's process-wide session keeps the model alive; release it before the
            # reload check loads the checkpoint again, or peak memory holds both.
            from llmcompressor.core import reset_session

            reset_session()


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _partition(samples: list, rank: int, world: int) -> list:
    """Rank r's contiguous share: sizes differ by at most one, and together they are all the samples in order."""
    per, extra = divmod(len(samples), world)
    start = rank * per + min(rank, extra)
    return samples[start:start + per + (rank < extra)]


class AutoAWQBackend:
    name = "awq"
    library = "autoawq"
    uses_llmcompressor = False
    serves_as = "AWQ GEMM (legacy AutoAWQ format); vLLM loads it as awq_marlin"

    def validate(self, recipe: dict) -> None:
        pass  # the settings are checked by QuantizeSpec.validate: AutoAWQ takes no recipe

    def record(self, spec: QuantizeSpec, workdir: Path) -> str:
        import yaml

        qc = json.loads((workdir / "config.json").read_text()).get("quantization_config", {})
        return ("# Written by llmprod: AutoAWQ (legacy AWQ GEMM format) made this checkpoint with these settings.\n"
                + yaml.safe_dump({"autoawq": {"quant_config": qc, "calibration": {"num_samples": spec.num_samples,
                                                                                   "seq_len": spec.seq_len}}},
                                 sort_keys=False))

    def run(self, job: QuantizeJob) -> None:
        require("awq", "quantize")
        transformers = require("transformers", "model")
        from awq import AutoAWQForCausalLM

        s = job.spec.settings
        model = AutoAWQForCausalLM.from_pretrained(str(job.source_dir), device_map="cpu")
        tokenizer = transformers.AutoTokenizer.from_pretrained(job.source_dir)
        modules_to_not_convert = [p for p in (s.ignore or ()) if p != "lm_head"] or None
        quant_config = {"zero_point": True, "q_group_size": s.group_size, "w_bit": s.bits, "version": "GEMM",
                        "modules_to_not_convert": modules_to_not_convert}
        hooks = _track_layers(model.model, job.on_layer)
        try:
            model.quantize(
                tokenizer,
                quant_config=quant_config,
                calib_data=job.calibration.samples,  # token ids: the very samples the other backend gets
                max_calib_samples=len(job.calibration.samples),
                max_calib_seq_len=job.spec.seq_len,
                n_parallel_calib_samples=None,
                **{k: v for k, v in (s.options or {}).items() if k in {"duo_scaling", "apply_clip"}},
            )
        finally:
            for hook in hooks:
                hook.remove()
        model.save_quantized(str(job.workdir))
        tokenizer.save_pretrained(job.workdir)
        gen = job.source_dir / "generation_config.json"
        if gen.is_file() and not (job.workdir / "generation_config.json").exists():
            (job.workdir / "generation_config.json").write_bytes(gen.read_bytes())


BACKENDS: dict[str, QuantizationBackend] = {b.name: b for b in (LlmCompressorBackend(), AutoAWQBackend())}
