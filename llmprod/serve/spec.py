"""What `llmprod serve` is asked to do, with its defaults: the one place they are written (the CLI's options
and the gateway's config take theirs from here), checked before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmprod.errors import InputError

# Options that only mean something to vLLM (each passed as --max-model-len etc.): refused with the
# embedded engine instead of silently ignored.
VLLM_ONLY = ("max_model_len", "gpu_memory_utilization", "kv_cache_dtype", "tensor_parallel_size",
             "pipeline_parallel_size", "data_parallel_size")


@dataclass(frozen=True)
class EngineOptions:
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    # vLLM's own data parallelism: N engine ranks of tp × pp GPUs each in one process group, its own load
    # balancing in front of them; still one engine to llmprod (one port, one supervisor, one SIGTERM)
    data_parallel_size: int | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServeSpec:
    model: str | None = None
    engine: str = "auto"
    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    guardrails: str | None = None
    no_guardrails: bool = False
    api_key: str | None = None
    api_keys: Path | None = None  # a file of client keys and limits (keys.py), reloaded on SIGHUP
    max_concurrency: int = 256
    max_body_size: int = 4 * 1024 * 1024
    request_timeout: float = 600.0
    served_model_name: str | None = None
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    vllm_bin: str | None = None
    engine_timeout: float = 900.0
    grace_period: float = 30.0
    engine_log: Path | None = None
    workers: int = 1  # gateway processes sharing the port (worker.py); the engine stays one
    # The policy's Llama Guard models served by vLLM beside the main engine (guards.py): on this GPU index
    # (None: the main engine's, its memory split), and the GPU's memory where nvidia-smi cannot say it.
    guard_gpu: int | None = None
    gpu_memory: int | None = None

    def validate(self) -> None:
        if self.upstream and self.model:
            raise InputError("give MODEL or --upstream, not both",
                             hint="--upstream fronts an engine that is already running and starts none")
        if not self.upstream and not self.model:
            raise InputError("no model to serve", hint="give MODEL (hub id or directory), or --upstream URL")
        if self.upstream and self.engine != "auto":
            raise InputError("--engine starts an engine; --upstream fronts one that is running",
                             hint="drop one of them")
        if self.api_key and self.api_keys:
            raise InputError("--api-key and --api-keys both given",
                             hint="put that key in the --api-keys file (one client per entry), or drop the file")
        if self.no_guardrails and self.guardrails:
            raise InputError("--guardrails and --no-guardrails contradict each other", hint="keep one")
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port} is not a TCP port", hint="use 1-65535")
        checks = [(self.max_concurrency >= 1, "--max-concurrency must be at least 1"),
                  (self.max_body_size >= 1024, "--max-body-size must be at least 1KiB"),
                  (self.request_timeout > 0, "--request-timeout must be positive"),
                  (self.engine_timeout > 0, "--engine-timeout must be positive"),
                  (self.grace_period >= 0, "--grace-period must not be negative"),
                  (self.workers >= 1, "--workers must be at least 1")]
        for ok, message in checks:
            if not ok:
                raise InputError(message, hint="see `llmprod serve --help`")
        if (self.guard_gpu is not None or self.gpu_memory) and (self.upstream or self.engine == "transformers"):
            raise InputError("--guard-gpu and --gpu-memory place guard engines that serve starts beside vLLM",
                             hint="use them with --engine vllm (or auto on a GPU), or drop them")
        gmu = self.engine_options.gpu_memory_utilization
        if gmu is not None and not 0 < gmu <= 1:
            raise InputError(f"--gpu-memory-utilization {gmu} is not in (0, 1]", hint="e.g. 0.9")
        for name in ("max_model_len", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            value = getattr(self.engine_options, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1", hint="see `llmprod serve --help`")
