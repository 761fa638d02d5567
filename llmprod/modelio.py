"""Finding and loading Hugging Face checkpoints: local directories or hub ids, full precision or quantized.

Shared by quantize (source model, reload check), perplexity and serve. Errors are the user's to
fix (a path that does not exist, a hub id while offline), so they are InputErrors with a hint.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmprod.errors import InputError, NotFoundError, OfflineError, require
from llmprod.sources import hub_offline

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """What the user named: a local directory, or a hub id (optionally at a revision)."""

    name: str
    local_dir: Path | None
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None

    @property
    def load_path(self) -> str:
        return str(self.local_dir) if self.local_dir is not None else self.name


def share_modes(directory: Path) -> None:
    """A model directory written in a private temporary directory (mkdtemp is 0700, and transformers writes
    model.safetensors 0600) gets the ordinary modes, so whoever serves it can read it: 0755 and 0644."""
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def is_hub_id(name: str) -> bool:
    """Shaped like `org/name` (what the hub accepts), not a path."""
    return not name.startswith((".", "/", "~")) and _HUB_ID.match(name) is not None


def resolve_model(name: str, revision: str | None = None) -> ModelRef:
    """A local directory with config.json, or something shaped like a hub id; else a clear error."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{name} is a file; a model is a directory holding config.json",
                             hint="pass the directory that contains it")
        if not (path / "config.json").is_file():
            raise NotFoundError(f"{name} has no config.json, so it is not a Hugging Face model directory",
                                hint="point at the directory that save_pretrained wrote")
        return ModelRef(name=name, local_dir=path.resolve(), revision=None)
    if not is_hub_id(name):
        raise NotFoundError(f"model {name!r} not found: no such directory, and not a hub id (org/name)",
                            hint="check the path, or give a hub id such as meta-llama/Llama-3.2-1B-Instruct")
    return ModelRef(name=name, local_dir=None, revision=revision)


def offline_error(name: str) -> OfflineError:
    """The one message every command gives for a hub id it cannot fetch because the hub is out of reach."""
    return OfflineError(f"{name!r} is not a local directory, and the Hugging Face hub cannot be reached here "
                        "(HF_HUB_OFFLINE is set, or there is no network)",
                        hint=f"download it where there is a network (hf download {name} --local-dir DIR) and pass "
                             "DIR, or unset HF_HUB_OFFLINE")


def looks_offline(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return hub_offline() or any(w in text for w in ("offline", "connect", "resolve", "network", "timed out"))


def check_model_source(name: str, revision: str | None = None) -> ModelRef:
    """Before an engine starts: a local model directory, or a hub id that can be had (cached, or online)."""
    ref = resolve_model(name, revision)
    if ref.local_dir is None and hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            raise offline_error(name)
    return ref


def _hub_error(ref: ModelRef, exc: Exception) -> InputError:
    if looks_offline(exc):
        return offline_error(ref.name)
    return NotFoundError(f"cannot load {ref.name!r} from the hub: {str(exc).splitlines()[0]}",
                         hint="check the id, the revision and your HF_TOKEN for gated models")


def pick_device(requested: str) -> str:
    torch = require("torch", "model")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but torch sees no CUDA GPU",
                         hint="use --device cpu, or install the CUDA build of torch")
    return requested


def pick_dtype(requested: str, device: str, config: Any):
    """auto: the checkpoint's own dtype on a GPU; float32 on CPU (bf16 matmuls are slow and coarse there)."""
    torch = require("torch", "model")
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if requested != "auto":
        if requested not in names:
            raise InputError(f"unknown --dtype {requested!r}", hint="use auto, float32, bfloat16 or float16")
        return names[requested]
    if device == "cpu":
        return torch.float32
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = names.get(dtype)
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16


def quiet_backends() -> None:
    """Keep transformers' and the hub's own progress bars and info logs off our stderr.

    (--verbose is honoured one level up, by libraryoutput.library_output.)
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # compressed-tensors' "Decompressing model" bars
    transformers = require("transformers", "model")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_config(ref: ModelRef):
    transformers = require("transformers", "model")
    try:
        return transformers.AutoConfig.from_pretrained(ref.load_path, revision=ref.revision)
    except OSError as exc:
        if ref.is_local:
            raise NotFoundError(f"cannot read the config of {ref.name}: {str(exc).splitlines()[0]}") from exc
        raise _hub_error(ref, exc) from exc


def load_tokenizer(ref: ModelRef):
    transformers = require("transformers", "model")
    try:
        return transformers.AutoTokenizer.from_pretrained(ref.load_path, revision=ref.revision)
    except (OSError, ValueError) as exc:
        if ref.is_local:
            raise NotFoundError(f"{ref.name} has no usable tokenizer: {str(exc).splitlines()[0]}",
                                hint="save the tokenizer next to the weights (tokenizer.save_pretrained)") from exc
        raise _hub_error(ref, exc) from exc


def quantization_method(config: Any) -> str | None:
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        return None
    return (qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)) or None


def load_causal_lm(ref: ModelRef, device: str = "auto", dtype: str = "auto", dequantize: bool = True):
    """The model in eval mode on `device`; quantized checkpoints load through their quantization_config.

    compressed-tensors checkpoints are decompressed at load with `dequantize`, or else kept packed as
    stored and decompressed by compressed-tensors on the first forward pass (the same weights, without
    building a dense copy at load: what a one-forward check wants). AWQ GEMM checkpoints need
    gptqmodel's kernels in transformers 5, and where it is not installed (any CPU machine) their
    weights are dequantized with AutoAWQ's own unpacking.
    """
    transformers = require("transformers", "model")
    quiet_backends()
    device = pick_device(device)
    config = load_config(ref)
    torch_dtype = pick_dtype(dtype, device, config)
    method = quantization_method(config)
    kwargs: dict[str, Any] = {}
    try:
        if method == "compressed-tensors":
            # FP4 weights unpack only at load, and into bfloat16 whatever the model's dtype (compressed-tensors
            # 0.19): dequantize them there and bring them to the model's dtype below.
            dequantize = dequantize or _has_fp4_weights(config)
            kwargs["quantization_config"] = transformers.CompressedTensorsConfig(dequantize=dequantize)
        elif method == "awq" and importlib.util.find_spec("gptqmodel") is None:
            return _load_awq_dequantized(ref, config, torch_dtype, device)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            ref.load_path, revision=ref.revision, dtype=torch_dtype, device_map=device, **kwargs)
    except OSError as exc:
        if ref.is_local:
            raise NotFoundError(f"cannot load the weights in {ref.name}: {str(exc).splitlines()[0]}") from exc
        raise _hub_error(ref, exc) from exc
    if method == "compressed-tensors" and dequantize:
        for param in model.parameters():
            if param.is_floating_point() and param.dtype != model.dtype:
                param.data = param.data.to(model.dtype)
    model.eval()
    return model


def _has_fp4_weights(config: Any) -> bool:
    qc = getattr(config, "quantization_config", None)
    qc = qc if isinstance(qc, dict) else (qc.to_dict() if qc is not None else {})
    for group in (qc.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") or {}
        if weights.get("type") == "float" and int(weights.get("num_bits") or 0) == 4:
            return True
    return False


def _load_awq_dequantized(ref: ModelRef, config: Any, torch_dtype, device: str):
    """An AWQ GEMM checkpoint as a plain model: W = (q - zero) * scale per group, via AutoAWQ's unpacking."""
    transformers = require("transformers", "model")
    require("awq", "quantize")
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors.torch import load_file, save_file

    if not ref.is_local:
        hub = require("huggingface_hub", "model")
        ref = ModelRef(ref.name, Path(hub.snapshot_download(ref.name, revision=ref.revision)), ref.revision)
    qc = config.quantization_config
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    bits, group = int(qc.get("bits", qc.get("w_bit", 4))), int(qc.get("group_size", qc.get("q_group_size", 128)))
    state: dict[str, Any] = {}
    for file in sorted(ref.local_dir.glob("*.safetensors")):
        state.update(load_file(file))
    for key in [k for k in state if k.endswith(".qweight")]:
        prefix = key[: -len(".qweight")]
        weight = dequantize_gemm(state.pop(key), state.pop(f"{prefix}.qzeros"), state.pop(f"{prefix}.scales"),
                                 bits, group)
        state[f"{prefix}.weight"] = weight.t().contiguous()  # AWQ stores [in, out]; Linear wants [out, in]
    plain = transformers.AutoConfig.from_pretrained(ref.local_dir)
    del plain.quantization_config
    # A plain checkpoint in a temporary directory, loaded the standard way (buffers, tied weights).
    with tempfile.TemporaryDirectory(prefix="llmprod-awq-") as tmp:
        plain.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in state.items()}, f"{tmp}/model.safetensors", metadata={"format": "pt"})
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch_dtype, device_map=device)
    return model.eval()


def max_context(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
