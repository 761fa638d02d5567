"""What a quantization run does, resolved once: command line > recipe file > defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llmprod.errors import ConfigError, InputError

METHODS = ("awq", "gptq", "rtn")
FORMATS = ("compressed-tensors", "awq")
# Group sizes vLLM's Marlin/Machete kernels serve for W4A16/W8A16; -1 means one scale per output channel.
VLLM_GROUP_SIZES = (-1, 32, 64, 128)
KV_CACHE_SCHEMES = ("fp8",)
SMOOTHQUANT_STRENGTH = 0.8  # what llm-compressor's INT8 W8A8 examples use (the modifier alone defaults to 0.5)


@dataclass(frozen=True)
class Scheme:
    """A weight (and activation) format vLLM serves, and what may produce it."""

    name: str
    weights: str  # what one weight is stored as
    activations: str | None  # None: 16-bit activations (weight-only)
    preset: str | None  # compressed-tensors' preset; None: config_groups from --bits/--group-size/--symmetric
    methods: tuple[str, ...]  # the first is the default
    bits: int
    grouped: bool = False  # takes --group-size and --symmetric
    hardware: str = ""
    stored_as: str = ""  # compressed-tensors' format name in config.json
    # The linear kernel vLLM 0.26.0 picked for it on an H200, from its start-up log (tests/data/vllm-0.26.0/)
    hopper_kernel: str = ""

    @property
    def weight_only(self) -> bool:
        return self.activations is None


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("w4a16", "4-bit integer", None, None, ("gptq", "awq", "rtn"), 4, grouped=True,
           hardware="Marlin/Machete kernels, any NVIDIA GPU from Turing on", stored_as="pack-quantized",
           hopper_kernel="Machete (MacheteLinearKernel)"),
    Scheme("w8a16", "8-bit integer", None, None, ("gptq", "awq", "rtn"), 8, grouped=True,
           hardware="Marlin/Machete kernels, any NVIDIA GPU from Turing on", stored_as="pack-quantized",
           hopper_kernel="Machete (MacheteLinearKernel)"),
    Scheme("w8a8-int8", "8-bit integer, per output channel", "8-bit integer, dynamic per token", "W8A8",
           ("gptq", "rtn"), 8, hardware="INT8 tensor cores, Ampere and later", stored_as="int-quantized",
           hopper_kernel="CUTLASS INT8 scaled-mm (CutlassInt8ScaledMMLinearKernel)"),
    Scheme("w8a8-fp8", "FP8 E4M3, per output channel", "FP8 E4M3, dynamic per token", "FP8_DYNAMIC",
           ("rtn",), 8, hardware="FP8 tensor cores: Hopper, Ada, Blackwell (Ampere runs it weight-only via Marlin)",
           stored_as="float-quantized", hopper_kernel="CUTLASS FP8 scaled-mm (CutlassFP8ScaledMMLinearKernel)"),
    Scheme("fp8-block", "FP8 E4M3, 128x128 blocks", "FP8 E4M3, dynamic per token group of 128", "FP8_BLOCK",
           ("rtn",), 8, hardware="FP8 tensor cores: Hopper, Ada, Blackwell", stored_as="float-quantized",
           hopper_kernel="DeepGEMM FP8 block-scaled (DeepGemmFp8BlockScaledMMKernel)"),
    Scheme("nvfp4a16", "FP4 E2M1, groups of 16 (FP8 scales, one global scale)", None, "NVFP4A16",
           ("rtn",), 4, hardware="Blackwell FP4 tensor cores; Hopper and Ampere serve it weight-only via Marlin",
           stored_as="nvfp4-pack-quantized", hopper_kernel="Marlin FP4 (MarlinNvFp4LinearKernel)"),
)}
# --bits is shorthand for the weight-only integer schemes.
BITS_SCHEMES = {4: "w4a16", 8: "w8a16"}


@dataclass(frozen=True)
class QuantizeSettings:
    """The settings a recipe or the command line may give; None means "not given here"."""

    method: str | None = None
    scheme: str | None = None
    group_size: int | None = None
    symmetric: bool | None = None
    ignore: tuple[str, ...] | None = None
    # Extra keyword arguments of the algorithm's modifier (GPTQ dampening_frac, AWQ duo_scaling, ...).
    options: dict[str, Any] | None = None
    smoothquant: float | None = None  # SmoothQuant's migration strength, before the quantizer
    kv_cache: str | None = None  # "fp8": calibrated per-tensor KV cache scales

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def info(self) -> Scheme:
        return SCHEMES[self.scheme or "w4a16"]

    @property
    def bits(self) -> int:
        return self.info.bits

    @property
    def needs_data(self) -> bool:
        """Whether calibration text is read at all: RTN alone quantizes from the weights."""
        return self.method != "rtn" or self.smoothquant is not None or self.kv_cache is not None


DEFAULTS = QuantizeSettings(ignore=("lm_head",), options={})


def scheme_from_flags(scheme: str | None, bits: int | None) -> str | None:
    """--scheme, or --bits as its shorthand; both given must agree."""
    if bits is not None and bits not in BITS_SCHEMES:
        raise InputError(f"{bits}-bit weights are not supported",
                         hint="use --bits 4 or --bits 8 (W4A16 / W8A16), or a --scheme")
    if scheme is None:
        return BITS_SCHEMES.get(bits) if bits is not None else None
    if scheme not in SCHEMES:
        raise InputError(f"unknown --scheme {scheme!r}", hint=f"use one of {', '.join(SCHEMES)}")
    if bits is not None and BITS_SCHEMES[bits] != scheme:
        raise InputError(f"--bits {bits} contradicts --scheme {scheme}",
                         hint="drop --bits: the scheme fixes the number of bits")
    return scheme


def resolve_settings(cli: QuantizeSettings, recipe: QuantizeSettings | None,
                     symmetric_default: bool | None = None) -> QuantizeSettings:
    """The one place precedence is decided: command line, then the recipe, then DEFAULTS.

    The scheme defaults to W4A16, the method to the scheme's own where it has only one way to be made
    (RTN for the FP8 and FP4 presets, GPTQ after SmoothQuant for INT8 W8A8). Symmetry defaults by method
    as the papers and llm-compressor's presets do: GPTQ and RTN symmetric (W4A16), AWQ asymmetric with
    zero points (W4A16_ASYM); the AWQ GEMM format is always asymmetric. Every combination the libraries
    would refuse, or vLLM could not serve, is refused here, before anything is loaded.
    """
    recipe_given = recipe.given() if recipe else {}
    merged = {**DEFAULTS.given(), **recipe_given, **cli.given()}
    scheme = SCHEMES[merged.setdefault("scheme", "w4a16")]
    method = merged.get("method")
    if method is None:
        if len(scheme.methods) > 1 and scheme.weight_only:
            raise InputError("no quantization method given",
                             hint=f"pass --method {' or --method '.join(scheme.methods)}, or a --recipe")
        method = merged["method"] = scheme.methods[0]
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", hint="use --method awq, gptq or rtn")
    if method not in scheme.methods:
        raise InputError(f"--method {method} cannot make {scheme.name} ({scheme.weights} weights)",
                         hint=f"use --method {' or '.join(scheme.methods)} with --scheme {scheme.name}")
    if scheme.name == "w8a8-int8" and method == "gptq" and "smoothquant" not in merged:
        merged["smoothquant"] = SMOOTHQUANT_STRENGTH  # INT8 activations need their outliers moved to weights
    smooth = merged.get("smoothquant")
    if smooth == 0:  # --smoothquant 0: off
        merged.pop("smoothquant")
        smooth = None
    if smooth is not None:
        if scheme.name != "w8a8-int8":
            raise InputError(f"--smoothquant moves activation outliers into the weights; {scheme.name} does not "
                             "quantize activations to integers",
                             hint="drop --smoothquant, or use --scheme w8a8-int8")
        if not 0 < float(smooth) < 1:
            raise InputError(f"--smoothquant strength {smooth} is not between 0 and 1", hint="0.8 is the usual choice")
        merged["smoothquant"] = float(smooth)
    kv = merged.get("kv_cache")
    if kv is not None and kv not in KV_CACHE_SCHEMES:
        raise InputError(f"unknown --kv-cache-scheme {kv!r}", hint="use --kv-cache-scheme fp8")
    if scheme.grouped:
        if "symmetric" not in merged:
            merged["symmetric"] = (method != "awq") if symmetric_default is None else symmetric_default
        merged.setdefault("group_size", 128)
        group = merged["group_size"]
        if not isinstance(group, int) or (group < 1 and group != -1):
            raise InputError(f"--group-size {group} is not a positive integer (or -1 for per-channel)",
                             hint="128 is the usual choice")
    else:
        for key, flag in (("group_size", "--group-size"), ("symmetric", "--symmetric/--asymmetric")):
            if key in cli.given():
                raise InputError(f"{flag} does not apply to {scheme.name}: its layout is fixed ({scheme.weights})",
                                 hint=f"drop {flag}, or use --scheme w4a16 or w8a16")
            merged.pop(key, None)
    return QuantizeSettings(**merged)


@dataclass(frozen=True)
class QuantizeSpec:
    model: str
    output: Path
    settings: QuantizeSettings
    revision: str | None = None  # of a hub model
    format: str = "compressed-tensors"
    dataset: str = "pile-val"
    num_samples: int = 256
    seq_len: int = 2048
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    recipe_path: Path | None = None
    verbose: bool = False
    gpus: int = 1  # data-parallel calibration over this many GPUs of one host (torchrun)
    # The calibration flags the user gave (--dataset, --num-samples, --seq-len): refused where no data is read.
    calibration_flags: tuple[str, ...] = ()

    def validate(self) -> None:
        s = self.settings
        if self.format not in FORMATS:
            raise InputError(f"unknown --format {self.format!r}", hint="use compressed-tensors or awq")
        if self.format == "awq" and (s.method != "awq" or s.scheme != "w4a16"):
            raise InputError(f"--format awq writes AutoAWQ's 4-bit GEMM checkpoints; got --method {s.method} "
                             f"--scheme {s.scheme}",
                             hint="use --method awq --scheme w4a16 with --format awq, or --format compressed-tensors")
        if self.format == "awq" and s.symmetric:
            raise InputError("--format awq stores zero points: it is always asymmetric",
                             hint="drop --symmetric, or use --format compressed-tensors")
        if self.format == "awq" and s.kv_cache:
            raise InputError("--format awq cannot hold KV cache scales",
                             hint="drop --kv-cache-scheme, or use --format compressed-tensors")
        if not s.needs_data and self.calibration_flags:
            raise InputError(f"{'/'.join(self.calibration_flags)} given, but {s.method.upper()} {s.scheme} reads "
                             "no calibration data (it rounds the weights as they are)",
                             hint=f"drop {' and '.join(self.calibration_flags)}, or use --method gptq "
                                  "(or --kv-cache-scheme fp8, whose scales are calibrated)")
        if self.num_samples < 1:
            raise InputError("--num-samples must be at least 1")
        if self.seq_len < 16:
            raise InputError("--seq-len must be at least 16 tokens")
        if self.gpus < 1:
            raise InputError(f"--gpus {self.gpus} is not a number of GPUs", hint="use --gpus 1 or more")
        if self.gpus > 1:
            if self.format != "compressed-tensors":
                raise InputError("--gpus runs llm-compressor's data-parallel calibration; AutoAWQ has none",
                                 hint="drop --gpus, or use --format compressed-tensors")
            if not s.needs_data:
                raise InputError(f"--gpus splits the calibration data; {s.method.upper()} {s.scheme} reads none",
                                 hint="drop --gpus: one GPU (or none) rounds the weights")
            if self.num_samples < self.gpus:
                raise InputError(f"--num-samples {self.num_samples} gives some of the {self.gpus} GPUs nothing",
                                 hint=f"use at least {self.gpus} samples, or fewer --gpus")

    def scheme_name(self) -> str:
        """compressed-tensors' name for the scheme (W4A16_ASYM, FP8_DYNAMIC, ...)."""
        s = self.settings
        if s.info.preset:
            return s.info.preset
        return f"W{s.bits}A16" + ("" if s.symmetric else "_ASYM")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self.settings), "format": self.format, "scheme": self.scheme_name()}


# Every quantized layer's input size must be a multiple of these, whatever the group size.
FIXED_BLOCKS = {"fp8-block": 128, "nvfp4a16": 16}


def check_group_size(linear_in_features: dict[str, int], settings: QuantizeSettings) -> None:
    """Every quantized layer's input size must be a multiple of the group size (refused before any work)."""
    block = FIXED_BLOCKS.get(settings.scheme or "")
    if block:
        bad = {name: n for name, n in linear_in_features.items() if n % block}
        if bad:
            name, n = next(iter(bad.items()))
            raise ConfigError(f"{settings.scheme} needs input sizes that are multiples of {block}; {name} has {n} "
                              f"({len(bad)} layer(s) affected)",
                              hint="add those layers to --ignore, or use --scheme w8a8-fp8")
        return
    if not settings.info.grouped or settings.group_size == -1:
        return
    bad = {name: n for name, n in linear_in_features.items() if n % settings.group_size}
    if bad:
        name, n = next(iter(bad.items()))
        divisors = [g for g in (32, 64, 128) if all(v % g == 0 for v in linear_in_features.values())]
        raise ConfigError(
            f"--group-size {settings.group_size} does not divide the input size {n} of {name} "
            f"({len(bad)} layer(s) affected)",
            hint=f"use one of {divisors or [-1]} or add those layers to --ignore",
        )
