"""What llmprod knows of vLLM the program: where it is, which release it is, and what its log says.

vLLM runs in its own environment, so its version is read from that environment (the interpreter in the
`vllm` script's shebang), falling back to `vllm --version`. Its start-up lines carry the figures
`estimate-memory` predicts (weights, KV cache memory and tokens, concurrency, the memory budget), the
kernel a quantized checkpoint runs on, and, when it refuses to start, the reason; `StartupLog` reads them.
The patterns follow vLLM 0.26.0's wording (tests/data/vllm-0.26.0 holds real lines).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmprod.errors import InputError

GiB = 1 << 30
# `llmprod serve` writes this before each start of the engine, so a log holds one section per start.
START_MARKER = "==== llmprod: starting"


def find_vllm(vllm_bin: str | None) -> str | None:
    """The `vllm` executable: --vllm-bin if given (it must be one), else the one on PATH, else None."""
    if vllm_bin:
        path = Path(vllm_bin).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise InputError(f"--vllm-bin {vllm_bin} is not an executable file",
                             hint="point it at the `vllm` script of the environment vLLM is installed in")
        return str(path)
    return shutil.which("vllm")


_VERSION = re.compile(r"\b(\d+\.\d+\.\d+(?:[.+\w-]*)?)")


def installed_version(vllm_path: str, timeout: float = 120.0) -> str | None:
    """The release of the vLLM behind `vllm_path`, or None when it cannot be told."""
    interpreter = _shebang_python(vllm_path)
    if interpreter:
        try:
            done = subprocess.run([interpreter, "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                                  capture_output=True, text=True, timeout=30)
            found = _last_version(done)
            if found:
                return found
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:  # a wrapper script (or metadata missing): ask vLLM itself, which imports it (seconds)
        return _last_version(subprocess.run([vllm_path, "--version"], capture_output=True, text=True,
                                            timeout=timeout))
    except (OSError, subprocess.TimeoutExpired):
        return None


def _last_version(done: subprocess.CompletedProcess) -> str | None:
    found = _VERSION.findall(done.stdout) if done.returncode == 0 else []
    return found[-1] if found else None


def _shebang_python(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(512).decode(errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if parts and Path(parts[0]).name == "env":
        parts = parts[1:]
    if parts and Path(parts[0]).name.startswith("python"):
        return shutil.which(parts[0]) or (parts[0] if os.access(parts[0], os.X_OK) else None)
    return None


@dataclass
class StartupLog:
    """The figures of one vLLM start, as its log states them (GiB figures are rounded to 0.01 there)."""

    version: str | None = None
    dtype: str | None = None
    kv_cache_dtype: str | None = None
    quantization: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    downcast: str | None = None  # "torch.float32 to torch.bfloat16"
    max_model_len: int | None = None
    weights_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    concurrency_context: int | None = None
    max_concurrency: float | None = None
    total_gib: float | None = None
    gpu_memory_utilization: float | None = None
    requested_gib: float | None = None
    peak_activation_gib: float | None = None
    non_torch_gib: float | None = None
    cuda_graph_gib: float | None = None
    cuda_graph_estimate_gib: float | None = None  # the V1 runner's, deducted before the KV cache is sized
    max_num_batched_tokens: int | None = None
    model_runner: str | None = None  # "V2" when vLLM says it runs the V2 model runner
    moe_backend: str | None = None  # "TRITON Unquantized", "TRITON Mxfp4", ...
    attention_backend: str | None = None
    kernels: list[str] = field(default_factory=list)  # "MacheteLinearKernel for CompressedTensorsWNA16"
    error: str | None = None  # why it stopped, in vLLM's words

    def figures(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


_NUM = r"([\d,]+(?:\.\d+)?)"
_PATTERNS: list[tuple[str, re.Pattern[str], type]] = [
    ("version", re.compile(r"LLM engine \(v([^)\s]+)\)|█ +version +(\S+)"), str),
    ("dtype", re.compile(r"\bdtype=torch\.(\w+)"), str),
    ("kv_cache_dtype", re.compile(r"\bkv_cache_dtype=(\w+)"), str),
    ("quantization", re.compile(r"\bquantization=([\w-]+)"), str),
    ("tensor_parallel_size", re.compile(r"\btensor_parallel_size=(\d+)"), int),
    ("pipeline_parallel_size", re.compile(r"\bpipeline_parallel_size=(\d+)"), int),
    ("downcast", re.compile(r"Downcasting (torch\.\w+ to torch\.\w+)"), str),
    ("max_model_len", re.compile(r"\bmax_seq_len=(\d+)"), int),
    ("weights_gib", re.compile(r"Model loading took " + _NUM + r" GiB"), float),
    ("kv_cache_gib", re.compile(r"Available KV cache memory: " + _NUM + r" GiB"), float),
    ("kv_cache_tokens", re.compile(r"GPU KV cache size: " + _NUM + r" tokens"), int),
    ("cuda_graph_estimate_gib", re.compile(r"Estimated CUDA graph memory: " + _NUM + r" GiB"), float),
    ("max_num_batched_tokens", re.compile(r"\bmax_num_batched_tokens=(\d+)"), int),
    ("model_runner", re.compile(r"Using (V2) Model Runner"), str),
    ("attention_backend", re.compile(r"Using (\w+) attention backend"), str),
]
# "Using TRITON Unquantized MoE backend out of ...", "Using 'TRITON' Mxfp4 MoE backend."
_MOE = re.compile(r"Using '?(\w+)'? (\w+ )?MoE backend")
_CONCURRENCY = re.compile(r"Maximum concurrency for " + _NUM + r" tokens per request: " + _NUM + r"x")
_BUDGET = re.compile(r"Free memory on device \(" + _NUM + "/" + _NUM + r" GiB\).*?utilization is \(" + _NUM
                     + ", " + _NUM + r" GiB\)\. Actual usage is " + _NUM + r" GiB for weight, " + _NUM
                     + r" GiB for peak activation, " + _NUM + r" GiB for non-torch memory, and " + _NUM
                     + r" GiB for CUDAGraph memory")
_KERNEL = re.compile(r"\b(?:Using|Selected) (\w+) for (\w+)")  # FP8/INT8 scaled-mm kernels log "Selected"
# A traceback's last line, behind the process prefix vLLM adds: "(EngineCore pid=7) ValueError: ...".
_ERROR = re.compile(r"^(?:\(\w+ pid=\d+\) )?((?:\w+\.)*\w*(?:Error|Exception)): (.+)$")
# What the API server says after any engine failure: the cause is the error before it.
_GENERIC = ("Engine core initialization failed", "EngineCore failed to start")
_FIT = re.compile(r"estimated maximum model length is (\d+)")


def _number(text: str, kind: type):
    return kind(text.replace(",", ""))


def parse_startup(text: str) -> StartupLog:
    """The figures of the last start in `text` (a log that `serve` appends to holds one section per start)."""
    text = text[text.rfind(START_MARKER):] if START_MARKER in text else text
    log = StartupLog()
    errors: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        for name, pattern, kind in _PATTERNS:
            m = getattr(log, name) is None and pattern.search(line)
            if m:
                setattr(log, name, _number(next(g for g in m.groups() if g), kind))
        m = _CONCURRENCY.search(line)
        if m and log.max_concurrency is None:
            log.concurrency_context, log.max_concurrency = _number(m[1], int), _number(m[2], float)
        m = _BUDGET.search(line)
        if m and log.total_gib is None:
            (_free, log.total_gib, log.gpu_memory_utilization, log.requested_gib, _weights, log.peak_activation_gib,
             log.non_torch_gib, log.cuda_graph_gib) = (_number(g, float) for g in m.groups())
        m = _MOE.search(line)
        if m and log.moe_backend is None and m[1] != "TritonExperts":
            log.moe_backend = f"{m[1]} {(m[2] or '').strip()}".strip()
        m = _KERNEL.search(line)
        if m and f"{m[1]} for {m[2]}" not in log.kernels:
            log.kernels.append(f"{m[1]} for {m[2]}")
        m = _ERROR.search(line.strip())
        if m:
            message = m[2].strip()
            if "validation error" in message:  # pydantic: the reason is on the lines that follow
                message += ": " + " ".join(_unprefixed(x) for x in lines[i + 1:i + 3] if x.strip())
            errors.append(f"{m[1].rsplit('.', 1)[-1]}: {message}")
    if log.quantization == "None":
        log.quantization = None
    causes = [e for e in errors if not any(g in e for g in _GENERIC)]
    log.error = (causes or errors or [None])[0]
    return log


def _unprefixed(line: str) -> str:
    return re.sub(r"^\(\w+ pid=\d+\) ", "", line.strip()).strip()


def read_startup(path: Path) -> StartupLog:
    try:
        return parse_startup(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return StartupLog()


_LIMITS = ("No available memory for the cache blocks", "max seq len", "max_model_len", "gpu_memory_utilization",
           "ValidationError")


def refusal(log: StartupLog, log_path: Path) -> InputError | None:
    """An InputError when vLLM refused the configuration it was given (its limits, not a crash)."""
    reason = log.error or ""
    fit = _FIT.search(reason)
    if fit:
        hint = f"serve with --max-model-len {fit[1]} or less, or raise --gpu-memory-utilization"
    elif any(word in reason for word in _LIMITS):
        hint = "check --max-model-len, --gpu-memory-utilization and --tensor-parallel-size against the model and the GPU"
    else:
        return None
    return InputError(f"vLLM refused to start: {_shorten(reason)}", hint=f"{hint}; the whole log is {log_path}")


def _shorten(reason: str, limit: int = 400) -> str:
    reason = re.sub(r"\s*See https?://\S+ for more details\.?", "", reason)
    return reason if len(reason) <= limit else reason[:limit - 1] + "…"
