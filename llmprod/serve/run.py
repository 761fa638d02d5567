"""`llmprod serve` from options to shutdown: validate, start the engine, run the gateway, stop cleanly.

Order matters for "nothing lost": everything a user can get wrong (policy, port, flags, engine binary)
is checked before the engine starts. On SIGINT/SIGTERM the gateway stops accepting, in-flight streams
get `grace` seconds to finish, and only then is the engine's process group stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from llmprod.errors import InputError
from llmprod.output import Output
from llmprod.serve.engines import (EngineCommand, EngineProcess, Supervisor, choose_engine, free_port,
                                   gpu_available, transformers_command, vllm_command)
from llmprod.serve.gateway import Gateway, GatewayConfig
from llmprod.serve.metrics import GatewayMetrics, shared_between_processes
from llmprod.serve.spec import EngineOptions, ServeSpec
from llmprod.serve.upstream import AiohttpUpstream, EngineState, Upstream, UpstreamError
from llmprod.urls import server_root
from llmprod.vllm import find_vllm, read_startup


def bind_port(host: str, port: int) -> socket.socket:
    """The gateway's socket, bound now (so a port in use fails before the engine starts) and listening only
    once the gateway serves; one socket for all of `--workers`' processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint="pick another --port, or stop what is using it") from None
    sock.set_inheritable(True)
    return sock


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


@dataclass(frozen=True)
class GatewaySettings:
    """What one gateway process needs, `serve`'s or a worker's (sent to it as JSON): the spec, where the engine
    is, and the directory of the processes' metrics."""

    spec: ServeSpec
    base_url: str
    supervised: bool
    models: dict[str, str] | None
    metrics_dir: str | None  # None: one process, metrics of its own
    index: int

    def to_json(self) -> str:
        spec = asdict(self.spec)
        spec["api_keys"] = str(self.spec.api_keys) if self.spec.api_keys else None
        spec["engine_log"] = str(self.spec.engine_log) if self.spec.engine_log else None
        return json.dumps({**asdict(self), "spec": spec})

    @classmethod
    def from_json(cls, text: str) -> "GatewaySettings":
        raw = json.loads(text)
        spec = dict(raw["spec"])
        options = dict(spec.pop("engine_options"))
        options["extra_args"] = tuple(options.get("extra_args") or ())
        spec["api_keys"] = Path(spec["api_keys"]) if spec["api_keys"] else None
        spec["engine_log"] = Path(spec["engine_log"]) if spec["engine_log"] else None
        return cls(**{**raw, "spec": ServeSpec(**spec, engine_options=EngineOptions(**options))})


def slots_per_process(max_concurrency: int, workers: int) -> int:
    """--max-concurrency shared out: each process's own limit, rounded up (at least one)."""
    return max(1, math.ceil(max_concurrency / workers))


def key_ring(spec: ServeSpec):
    """The clients of --api-keys as a KeyRing, or None without the flag."""
    if spec.api_keys is None:
        return None
    from llmprod.serve.keys import KeyRing, load_keys

    return KeyRing(load_keys(spec.api_keys))


def build_gateway(settings: GatewaySettings, out, policy, keys=None):
    """The gateway of one process, `serve`'s or a worker's: (gateway, what the guard enforces). `policy`:
    read_policy's; `keys`: the KeyRing already loaded, else --api-keys is read here."""
    spec = settings.spec
    metrics = GatewayMetrics(shared=settings.metrics_dir)
    guard, guard_lines = build_guard(policy, metrics, out)
    if keys is None:
        keys = key_ring(spec)
    config = GatewayConfig(api_key=spec.api_key, keys=keys,
                           max_concurrency=slots_per_process(spec.max_concurrency, spec.workers),
                           max_body_size=spec.max_body_size, request_timeout=spec.request_timeout,
                           models=settings.models)
    state = EngineState(settings.base_url, supervised=settings.supervised)
    upstream = AiohttpUpstream(settings.base_url, spec.request_timeout)
    return Gateway(state, config, guard=guard, metrics=metrics, upstream=upstream), guard_lines


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
        self.on_hangup: Callable[[], None] | None = None  # SIGHUP: reload --api-keys

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        if self.on_hangup is not None and hasattr(signal, "SIGHUP"):
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda _s, _f: self.on_hangup())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        self.received.append(signum)
        if not self.serving:
            raise KeyboardInterrupt


def run_serve(spec: ServeSpec, out: Output, on_ready: Callable[[dict], None]) -> None:
    """Check everything, start the engine (or check --upstream), serve until SIGINT/SIGTERM, stop cleanly.
    `on_ready(document)` once the gateway listens: what it serves, where, and what the guardrails enforce."""
    spec.validate()
    policy = read_policy(spec)
    upstream_url = server_root(spec.upstream, "--upstream") if spec.upstream else None
    keys = key_ring(spec)
    if keys is not None and spec.workers > 1 and keys.limited:
        raise InputError("--api-keys with per-minute limits needs --workers 1: each gateway process would "
                         "keep its own buckets", hint="drop the limits from the file, or the --workers")
    if spec.model:  # a path or hub id the engine could not load fails here, in a second, not after its start
        from llmprod.modelio import check_model_source

        check_model_source(spec.model)
    sock = bind_port(spec.host, spec.port)
    shared = tempfile.mkdtemp(prefix="llmprod-metrics-") if spec.workers > 1 else None
    try:
        with shared_between_processes(shared) if shared else contextlib.nullcontext():
            _run_serve(spec, out, on_ready, policy, upstream_url, keys, sock, shared)
    finally:
        sock.close()
        if shared:
            shutil.rmtree(shared, ignore_errors=True)


def _run_serve(spec: ServeSpec, out: Output, on_ready: Callable[[dict], None], policy, upstream_url: str | None,
               keys, sock: socket.socket, shared: str | None) -> None:
    guards: list[EngineProcess] = []
    pointed: Path | None = None
    if upstream_url:
        engine = None
        settings = GatewaySettings(spec, upstream_url, False, None, shared, 0)
    else:
        served_name = spec.served_model_name or spec.model
        command = plan_engine(spec, served_name)
        if command.kind == "vllm" and policy is not None:
            spec, command, guards, pointed = _plan_guards(spec, command, out)
            if pointed is not None:
                policy = read_policy(spec)  # the same policy, its Llama Guard checks pointed at their engines
        models = {served_name: command.model_id}
        log = spec.engine_log or Path(tempfile.gettempdir()) / "llmprod" / f"engine-{command.port}.log"
        engine = EngineProcess(command, log)
        settings = GatewaySettings(spec, command.base_url, True, models, shared, 0)
        out.note(f"engine: {command.kind} ({command.reason}); log: {log}")
    try:
        if guards:  # first: their checks are tried when the guard is built, and the main engine sizes what is left
            out.info(f"starting {len(guards)} guard engine(s): "
                     + ", ".join(f"{g.command.model_id} on 127.0.0.1:{g.command.port}" for g in guards) + " ...")
            for guard in guards:
                guard.start()
            run_loop(_wait_all(guards, spec.engine_timeout))
        _run_gateway(spec, out, on_ready, policy, keys, sock, settings, engine, guards)
    finally:
        for guard in guards:
            guard.stop()
        if pointed is not None:
            pointed.unlink(missing_ok=True)


def _plan_guards(spec: ServeSpec, command: EngineCommand, out: Output):
    """(spec, main engine command, guard engines, the pointed policy file or None): the policy's Llama Guard
    models served by vLLM beside the main model, the main engine's memory share lowered to match."""
    import yaml

    from llmprod.guardrails import DEFAULT_POLICY
    from llmprod.guardrails.policy import find_policy, served_guard_models
    from llmprod.serve.guards import gpu_total_bytes, plan_guard_engines, pointed_policy

    path = find_policy(spec.guardrails or DEFAULT_POLICY)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not served_guard_models(doc):
        return spec, command, [], None
    gpu_bytes = spec.gpu_memory or gpu_total_bytes()
    planned, utilization = plan_guard_engines(doc, command.argv[0], spec.max_concurrency, gpu_bytes,
                                              spec.guard_gpu, spec.engine_options.gpu_memory_utilization)
    if utilization is not None:
        command = with_utilization(command, utilization)
        out.note(f"GPU split: the guard engines plan {sum(g.total_bytes for g in planned) / 2**30:.2f} GiB; the main "
                 f"engine gets --gpu-memory-utilization {utilization}")
    pointed = pointed_policy(path, planned)
    log_dir = (spec.engine_log.parent if spec.engine_log else Path(tempfile.gettempdir()) / "llmprod")
    guards = [EngineProcess(g.command, log_dir / f"guard-{g.command.port}.log") for g in planned]
    for guard, plan in zip(guards, planned):
        guard.plan = plan.describe()
    return replace(spec, guardrails=str(pointed)), command, guards, pointed


def with_utilization(command: EngineCommand, utilization: float) -> EngineCommand:
    """The command with vLLM's --gpu-memory-utilization set (replaced where it was given before `--`)."""
    argv = list(command.argv)
    if "--gpu-memory-utilization" in argv:
        argv[argv.index("--gpu-memory-utilization") + 1] = str(utilization)
    else:
        at = argv.index("--served-model-name") + 2
        argv[at:at] = ["--gpu-memory-utilization", str(utilization)]
    return replace(command, argv=tuple(argv))


async def _wait_all(engines: list[EngineProcess], timeout: float) -> None:
    upstreams = [AiohttpUpstream(e.command.base_url, 30.0) for e in engines]
    try:
        await asyncio.gather(*(e.wait_ready(timeout, u) for e, u in zip(engines, upstreams)))
    finally:
        for upstream in upstreams:
            await upstream.close()


def _run_gateway(spec: ServeSpec, out: Output, on_ready, policy, keys, sock: socket.socket, settings, engine,
                 guards: list[EngineProcess]) -> None:
    from llmprod.serve.worker import WorkerPool

    gateway, guard_lines = build_gateway(settings, out, policy, keys)
    pool = WorkerPool(settings, sock, out) if spec.workers > 1 else None
    signals = _Signals()
    if keys is not None:
        def hangup() -> None:
            reload_keys(spec.api_keys, keys, out)
            for pid in pool.pids if pool else ():
                os.kill(pid, signal.SIGHUP)

        signals.on_hangup = hangup
    signals.install()
    try:
        run_loop(_serve(spec, out, gateway, engine, guard_lines, signals, on_ready, sock, pool, guards))
    finally:
        signals.restore()
        if engine is not None:
            engine.stop()
            out.info(f"engine stopped (pid {engine.pid})")


def reload_keys(path: Path, keys, out: Output) -> None:
    """SIGHUP: read --api-keys again; a file with an error leaves the keys in force as they were."""
    from llmprod.errors import LlmprodError
    from llmprod.serve.keys import load_keys

    try:
        fresh = load_keys(path)
    except LlmprodError as exc:
        out.warn(f"SIGHUP: --api-keys not reloaded, the keys in force stay: {exc}")
        return
    keys.replace(fresh)
    out.info(f"SIGHUP: --api-keys reloaded: {len(fresh)} client(s)")


def run_loop(coro) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _serve(spec: ServeSpec, out: Output, gateway: Gateway, engine: EngineProcess | None,
                 guard_lines: list[str], signals: _Signals, on_ready: Callable[[dict], None], sock: socket.socket,
                 pool=None, guards: list[EngineProcess] = ()) -> None:
    started = time.monotonic()
    upstream, state = gateway.upstream, gateway.state
    stopping = None
    try:
        if engine is not None:
            out.info(f"starting the {engine.command.kind} engine on 127.0.0.1:{engine.command.port} ...")
            engine.start()
            await engine.wait_ready(spec.engine_timeout, upstream)
        else:
            await _check_upstream(upstream, spec.api_key)
        if pool is not None:
            out.info(f"starting {spec.workers - 1} more gateway process(es) on the same port ...")
            await pool.start(spec.engine_timeout)
        server, serve_task = await start_serving(gateway, sock, spec.grace_period)
        if serve_task.done():
            serve_task.result()
            return
        signals.serving = True
        supervisor = Supervisor(engine, state, spec.engine_timeout, on_event=out.warn,
                                on_restart=gateway.metrics.engine_restarts.inc) if engine is not None else None
        supervising = asyncio.ensure_future(supervisor.run(upstream)) if supervisor is not None else None
        # Each guard engine restarted like the main one; while one is down its checks fail closed (503).
        guard_upstreams = [AiohttpUpstream(g.command.base_url, 30.0) for g in guards]
        guard_supervisors = [Supervisor(g, EngineState(g.command.base_url, supervised=True), spec.engine_timeout,
                                        on_event=out.warn) for g in guards]
        guarding = [asyncio.ensure_future(s.run(u)) for s, u in zip(guard_supervisors, guard_upstreams)]
        on_ready(_ready_document(spec, gateway, engine, guard_lines, time.monotonic() - started, pool, guards))
        if pool is not None:
            stopping = asyncio.ensure_future(_stop_with(server, pool))
        await serve_task
        if pool is not None:
            if server.should_exit:
                await stopping  # the workers were signalled as this process began to stop
            await pool.stop(spec.grace_period)  # they drain as this one did, before the engine goes
        for guard_supervisor in guard_supervisors:
            guard_supervisor.stopping = True
        for task in guarding:
            task.cancel()
        await asyncio.gather(*guarding, return_exceptions=True)
        for guard_upstream in guard_upstreams:
            await guard_upstream.close()
        if supervisor is not None:
            supervisor.stopping = True
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
        out.info("gateway stopped: no longer accepting; in-flight requests finished or timed out")
    finally:
        if pool is not None:
            if stopping is not None and not stopping.done():
                stopping.cancel()
            if not pool.stopping:
                await pool.stop(0.0)
        await upstream.close()


async def start_serving(gateway: Gateway, sock: socket.socket, grace: float):
    """(uvicorn server, its task) serving the gateway on the bound socket, once it accepts connections, or
    once the task has ended (it failed: the caller reads its result). `serve`'s process and each worker's."""
    import uvicorn

    config = uvicorn.Config(gateway.app, log_level="warning", access_log=False, timeout_graceful_shutdown=grace,
                            lifespan="on", loop="none", server_header=False, date_header=False)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    return server, task


async def _stop_with(server, pool) -> None:
    """The moment this process begins to stop (uvicorn got SIGINT or SIGTERM), the workers are told to: none
    of them keeps taking connections on the shared socket while the others drain."""
    while not server.should_exit:
        await asyncio.sleep(0.05)
    await pool.terminate()


async def _check_upstream(upstream: Upstream, api_key: str | None) -> None:
    """--upstream must answer /v1/models before the gateway opens (the key is passed on if it has one)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        answer = await upstream.call("GET", "/v1/models", headers=headers, timeout=10.0)
    except UpstreamError as exc:
        raise InputError(f"--upstream {upstream.base_url} is not reachable ({exc})",
                         hint="start the engine first, or check the URL") from None
    if answer.status >= 500 or answer.status == 404:
        raise InputError(f"--upstream {upstream.base_url} answered /v1/models with HTTP {answer.status}",
                         hint="give the base URL of an OpenAI-compatible server (vLLM, transformers serve)")


def _ready_document(spec: ServeSpec, gateway: Gateway, engine: EngineProcess | None, guard_lines: list[str],
                    seconds: float, pool=None, guards: list[EngineProcess] = ()) -> dict:
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
        **_engine_startup(engine),
        "upstream": gateway.state.base_url,
        "auth": (f"api keys: {len(gateway.keys.names)} client(s) from {spec.api_keys}" if spec.api_keys
                 else "api key" if spec.api_key else "none"),
        "guardrails": guard_lines,
        "guard_engines": [{**g.plan, "pid": g.pid, "log": str(g.log_path)} for g in guards],
        "max_concurrency": spec.max_concurrency,
        "workers": spec.workers,
        "worker_pids": [os.getpid(), *(pool.pids if pool else ())],
        "startup_seconds": round(seconds, 2),
    }


def _engine_startup(engine: EngineProcess | None) -> dict:
    """vLLM's release and its own memory figures from its start-up lines (what estimate-memory predicts)."""
    if engine is None or engine.command.kind != "vllm":
        return {}
    startup = read_startup(engine.log_path)
    figures = startup.figures()
    figures.pop("version", None)
    return {"engine_version": startup.version, "engine_startup": figures}
