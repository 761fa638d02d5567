"""Byte sizes the user types ("80GiB", "80GB", "81920MiB") and the GPUs they name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmprod.errors import InputError

GiB = 1 << 30
MiB = 1 << 20
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n} B"


def parse_size(text: str, option: str = "size") -> int:
    """'80GiB' = 80 * 2**30, '80GB' = 80 * 10**9, '81920MiB', '4096B'. A bare number is refused: "80" could
    mean 80 GiB or 80 bytes, and reading it as bytes only leads to a confusing "does not fit"."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else ""
    if m and not unit:
        raise InputError(f"{option} {text!r} has no unit",
                         hint=f"write it with one, e.g. {m.group(1)}GiB (2^30 bytes), {m.group(1)}GB (10^9 bytes) "
                              f"or {m.group(1)}B")
    if not m or unit not in _UNITS:
        raise InputError(f"{option} {text!r} is not a size",
                         hint="write it like 80GiB (2^30 bytes), 80GB (10^9 bytes) or 81920MiB")
    return int(float(m.group(1)) * _UNITS[unit])


_COUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)([kKmMgG]?)\s*$")
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_tokens(text: str, option: str = "--max-model-len") -> int:
    """A token count as vLLM reads one: 8k = 8,000 and 8K = 8,192 (m/M, g/G likewise); a decimal only with
    a lowercase (decimal) suffix, as in 25.6k."""
    m = _COUNT.match(text)
    if not m or ("." in m.group(1) and m.group(2) not in "kmg") or ("." in m.group(1) and not m.group(2)):
        raise InputError(f"{option} {text!r} is not a token count",
                         hint="a whole number, or with vLLM's suffixes: 8k = 8,000, 8K = 8,192, 1m, 1M")
    value = int(float(m.group(1)) * _COUNT_UNITS[m.group(2)])
    if value < 1:
        raise InputError(f"{option} {text!r} must be at least 1 token")
    return value


# Total memory in MiB, CUDA compute capability (x10) or "rocm", and what vLLM reports. vLLM sizes against the
# total CUDA reports (torch.cuda.mem_get_info), which can be a few hundred MiB under nvidia-smi's "total": the
# H200 row is what vLLM 0.26.0 logged on one ("139.8 GiB"; nvidia-smi says 143,771 MiB). The other rows are
# nvidia-smi / rocm-smi totals from the vendors' data sheets.
@dataclass(frozen=True)
class Gpu:
    label: str
    mib: int
    capability: int | None  # CUDA compute capability x 10; None on ROCm
    platform: str = "cuda"


GPUS: dict[str, Gpu] = {
    "h100-sxm": Gpu("NVIDIA H100 SXM 80GB", 81_559, 90),
    "h100-pcie": Gpu("NVIDIA H100 PCIe 80GB", 81_559, 90),
    "h200": Gpu("NVIDIA H200 141GB", 143_157, 90),
    "b200": Gpu("NVIDIA B200 180GB", 183_359, 100),
    "a100-80gb": Gpu("NVIDIA A100 80GB", 81_920, 80),
    "a100-40gb": Gpu("NVIDIA A100 40GB", 40_960, 80),
    "l40s": Gpu("NVIDIA L40S 48GB", 46_068, 89),
    "l4": Gpu("NVIDIA L4 24GB", 23_034, 89),
    "a10g": Gpu("NVIDIA A10G 24GB", 23_028, 86),
    "rtx5090": Gpu("NVIDIA GeForce RTX 5090 32GB", 32_607, 120),
    "rtx4090": Gpu("NVIDIA GeForce RTX 4090 24GB", 24_564, 89),
    "rtx3090": Gpu("NVIDIA GeForce RTX 3090 24GB", 24_576, 86),
    "mi300x": Gpu("AMD Instinct MI300X 192GB", 196_592, None, "rocm"),
}
_ALIASES = {"h100": "h100-sxm", "h100-80gb": "h100-sxm", "h100sxm": "h100-sxm", "h100pcie": "h100-pcie",
            "h200-141gb": "h200", "a100": "a100-80gb", "a100-80g": "a100-80gb", "a100-40g": "a100-40gb",
            "4090": "rtx4090", "3090": "rtx3090", "5090": "rtx5090", "rtx-4090": "rtx4090", "rtx-3090": "rtx3090",
            "rtx-5090": "rtx5090", "b200-180gb": "b200"}


# Rows whose total is what CUDA reported on the GPU itself, not nvidia-smi's figure.
CUDA_MEASURED = {"h200"}


def gpu_key(name: str) -> str:
    """The table's key for a GPU name ("H100", "a100 40gb", "RTX_4090"); an unknown name lists the known ones."""
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    key = _ALIASES.get(key, key)
    if key not in GPUS:
        known = ", ".join(k.upper() for k in GPUS)
        raise InputError(f"unknown GPU {name!r}", hint=f"use one of {known}, or --gpu-memory SIZE")
    return key


def gpu_memory(name: str) -> tuple[str, int, str]:
    """(description, total bytes, where the total comes from) of a named GPU; an unknown name lists the known ones."""
    key = gpu_key(name)
    gpu = GPUS[key]
    how = ("the total CUDA reports on it, which vLLM sees" if key in CUDA_MEASURED
           else "the vendor's total; CUDA, and so vLLM, may see a few hundred MiB less")
    return gpu.label, gpu.mib * MiB, how
