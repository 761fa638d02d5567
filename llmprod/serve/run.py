"""`llmprod serve` from options to shutdown: validate, start the engine, run the gateway, stop cleanly.

Order matters for "nothing lost": everything a user can get wrong (policy, port, flags, engine binary)
is checked before the engine starts. On SIGINT/SIGTERM the gateway stops accepting, in-flight streams
get `grace` seconds to finish, and only then is the engine's process group stopped.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmprod.errors import InputError
from llmprod.output import Output
from llmprod.serve.engines import (
    EngineCommand,
    EngineOptions,
    EngineProcess,
    Supervisor,
    UpstreamState,
    choose_engine,
    find_vllm,
    free_port,
    gpu_available,
    transformers_command,
    vllm_command,
)
from llmprod.serve.gateway import Gateway, GatewayConfig
from llmprod.serve.metrics import GatewayMetrics


@dataclass(frozen=True)
class ServeSpec:
    model: str | None = None
    engine: str = "auto"
    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    guardrails: Path | None = None
    no_guardrails: bool = False
    api_key: str | None = None
    max_concurrency: int = 256
    max_body_size: int = 4 * 1024 * 1024
    request_timeout: float = 600.0
    served_model_name: str | None = None
    engine_options: EngineOptions = field(default_factory=EngineOptions)
    vllm_bin: str | None = None
    engine_timeout: float = 900.0
    grace_period: float = 30.0
    engine_log: Path | None = None

    def validate(self) -> None:
        if self.upstream and self.model:
            raise InputError("give MODEL or --upstream, not both",
                             hint="--upstream fronts an engine that is already running and starts none")
        if not self.upstream and not self.model:
            raise InputError("no model to serve", hint="give MODEL (hub id or directory), or --upstream URL")
        if self.upstream and self.engine != "auto":
            raise InputError("--engine starts an engine; --upstream fronts one that is running",
                             hint="drop one of them")
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port} is not a TCP port", hint="use 1-65535")
        checks = [(self.max_concurrency >= 1, "--max-concurrency must be at least 1"),
                  (self.max_body_size >= 1024, "--max-body-size must be at least 1KiB"),
                  (self.request_timeout > 0, "--request-timeout must be positive"),
                  (self.engine_timeout > 0, "--engine-timeout must be positive"),
                  (self.grace_period >= 0, "--grace-period must not be negative")]
        for ok, message in checks:
            if not ok:
                raise InputError(message, hint="see `llmprod serve --help`")
        gmu = self.engine_options.gpu_memory_utilization
        if gmu is not None and not 0 < gmu <= 1:
            raise InputError(f"--gpu-memory-utilization {gmu} is not in (0, 1]", hint="e.g. 0.9")
        for name in ("max_model_len", "tensor_parallel_size"):
            value = getattr(self.engine_options, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1", hint="see `llmprod serve --help`")


def normalize_upstream(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--upstream {url!r} is not an http(s) URL", hint="e.g. http://10.0.0.5:8000")
    return url[:-3] if url.endswith("/v1") else url


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}",
                             hint="pick another --port, or stop what is using it") from None


def read_policy(spec: ServeSpec):
    """The policy, parsed and validated (cheap: nothing is loaded yet); None with --no-guardrails."""
    from llmprod.guardrails import DEFAULT_POLICY, load_policy

    return None if spec.no_guardrails else load_policy(spec.guardrails or DEFAULT_POLICY)


def build_guard(policy, metrics: GatewayMetrics, out: Output):
    """(guard or None, lines saying what is enforced). Every check is built here, guard models loaded and
    tried, endpoints asked: a check that cannot run stops start-up (exit 2) before anything listens."""
    from llmprod.guardrails import PolicyGuard
    from llmprod.guardrails.registry import CHECK_TYPES

    if policy is None:
        return None, ["guardrails: off (--no-guardrails): nothing is checked"]
    models = sorted({c.check for c in policy.input + policy.output if CHECK_TYPES[c.check].loads_model})
    if models:
        out.info(f"guardrails: loading and trying {', '.join(models)} ...")
    guard = PolicyGuard(policy, observer=metrics.guard_observer())
    return guard, guard.describe()


def plan_engine(spec: ServeSpec, served_name: str) -> EngineCommand:
    vllm_path = find_vllm(spec.vllm_bin) if spec.engine != "transformers" else None
    has_gpu = gpu_available()
    kind, reason = choose_engine(spec.engine, vllm_path, has_gpu)
    port = free_port()
    if kind == "vllm":
        return vllm_command(vllm_path, spec.model, served_name, port, spec.engine_options, reason)
    cache = Path(tempfile.gettempdir()) / "llmprod" / "hf-cache-empty"
    return transformers_command(spec.model, port, spec.engine_options, reason,
                                cache_dir=None if _has_hf_cache() else cache, on_gpu=has_gpu)


def _has_hf_cache() -> bool:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).is_dir()


class _Signals:
    """SIGINT/SIGTERM: while starting, interrupt (→ stop the engine, exit 130); while serving, uvicorn
    owns them and re-raises them after its graceful shutdown, which lands here and is just recorded."""

    def __init__(self) -> None:
        self.serving = False
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        self.received.append(signum)
        if not self.serving:
            raise KeyboardInterrupt


def run_serve(spec: ServeSpec, out: Output) -> None:
    spec.validate()
    policy = read_policy(spec)
    check_port_free(spec.host, spec.port)
    metrics = GatewayMetrics()
    guard, guard_lines = build_guard(policy, metrics, out)
    if spec.upstream:
        upstream_url = normalize_upstream(spec.upstream)
        command, engine, models = None, None, None
        state = UpstreamState(upstream_url, supervised=False)
    else:
        served_name = spec.served_model_name or spec.model
        command = plan_engine(spec, served_name)
        models = {served_name: command.model_id}
        log = spec.engine_log or Path(tempfile.gettempdir()) / "llmprod" / f"engine-{command.port}.log"
        engine = EngineProcess(command, log)
        state = UpstreamState(command.base_url, supervised=True)
        out.note(f"engine: {command.kind} ({command.reason}); log: {log}")
    config = GatewayConfig(api_key=spec.api_key, max_concurrency=spec.max_concurrency,
                           max_body_size=spec.max_body_size, request_timeout=spec.request_timeout,
                           models=models)
    gateway = Gateway(state, config, guard=guard, metrics=metrics)
    signals = _Signals()
    signals.install()
    try:
        _run_loop(_serve(spec, out, gateway, engine, state, guard_lines, signals))
    finally:
        signals.restore()
        if engine is not None:
            engine.stop()
            out.info(f"engine stopped (pid {engine.pid})")


def _run_loop(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _serve(spec: ServeSpec, out: Output, gateway: Gateway, engine: EngineProcess | None,
                 state: UpstreamState, guard_lines: list[str], signals: _Signals) -> None:
    import httpx
    import uvicorn

    started = time.monotonic()
    async with httpx.AsyncClient() as probe:
        if engine is not None:
            out.info(f"starting the {engine.command.kind} engine on 127.0.0.1:{engine.command.port} ...")
            engine.start()
            await engine.wait_ready(spec.engine_timeout, probe)
        else:
            await _check_upstream(probe, state.base_url, spec.api_key)
    config = uvicorn.Config(gateway.app, host=spec.host, port=spec.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=spec.grace_period, lifespan="on", loop="none",
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    supervisor = None
    supervisor_task = None
    if engine is not None:
        supervisor = Supervisor(engine, state, spec.engine_timeout, on_event=out.warn,
                                on_restart=gateway.metrics.engine_restarts.inc)
    serve_task = asyncio.ensure_future(server.serve())
    while not server.started and not serve_task.done():
        await asyncio.sleep(0.05)
    if serve_task.done():
        serve_task.result()
        return
    signals.serving = True
    async with httpx.AsyncClient() as supervisor_client:
        if supervisor is not None:
            supervisor_task = asyncio.ensure_future(supervisor.run(supervisor_client))
        out.result(_ready_document(spec, gateway, engine, state, guard_lines, time.monotonic() - started),
                   render=lambda console: _render_ready(console, spec, engine, state, guard_lines))
        await serve_task
        if supervisor is not None:
            supervisor.stopping = True
            supervisor_task.cancel()
            await asyncio.gather(supervisor_task, return_exceptions=True)
    out.info("gateway stopped: no longer accepting; in-flight requests finished or timed out")


async def _check_upstream(client, base_url: str, api_key: str | None) -> None:
    """--upstream must answer /v1/models before the gateway opens (the key is passed on if it has one)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await client.get(f"{base_url}/v1/models", headers=headers, timeout=10.0)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"--upstream {base_url} is not reachable ({type(exc).__name__})",
                         hint="start the engine first, or check the URL") from None
    if response.status_code >= 500 or response.status_code == 404:
        raise InputError(f"--upstream {base_url} answered /v1/models with HTTP {response.status_code}",
                         hint="give the base URL of an OpenAI-compatible server (vLLM, transformers serve)")


def _ready_document(spec, gateway, engine, state, guard_lines, seconds) -> dict:
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    url = f"http://{host}:{spec.port}"
    return {
        "url": f"{url}/v1",
        "metrics_url": f"{url}/metrics",
        "health_url": f"{url}/health",
        "models": list(gateway.config.models or []),
        "engine": engine.command.kind if engine else "upstream",
        "engine_pid": engine.pid if engine else None,
        "engine_log": str(engine.log_path) if engine else None,
        "upstream": state.base_url,
        "auth": "api key" if spec.api_key else "none",
        "guardrails": guard_lines,
        "max_concurrency": spec.max_concurrency,
        "startup_seconds": round(seconds, 2),
    }


def _render_ready(console, spec, engine, state, guard_lines) -> None:
    from rich.table import Table

    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    table = Table(title="llmprod serve: ready", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("OpenAI API", f"http://{host}:{spec.port}/v1")
    table.add_row("metrics", f"http://{host}:{spec.port}/metrics")
    if engine is not None:
        table.add_row("engine", f"{engine.command.kind} (pid {engine.pid}) on {state.base_url}, "
                                f"log {engine.log_path}")
        table.add_row("model", spec.served_model_name or spec.model)
    else:
        table.add_row("upstream", state.base_url)
    table.add_row("auth", "bearer API key" if spec.api_key else "none (set --api-key or LLMPROD_API_KEY)")
    table.add_row("guardrails", "\n".join(guard_lines))
    console.print(table)
    console.print("Ctrl-C (or SIGTERM) stops: in-flight streams finish, then the engine stops.", style="dim")
