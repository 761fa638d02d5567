"""The engine process behind the gateway: which one, its command line, start, readiness, supervision, stop.

vLLM is launched as a process (`vllm serve`), never imported: it lives in its own environment, since its
pins of torch, transformers and compressed-tensors conflict with llm-compressor's. The embedded engine is
`transformers serve --continuous-batching`, started with this interpreter. Either one binds 127.0.0.1 on
a free port; only the gateway is exposed. Each engine gets its own session (process group), so stopping
it stops every process it spawned (vLLM's engine core and workers included).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmprod.errors import InputError, OperationFailed
from llmprod.serve.spec import VLLM_ONLY, EngineOptions
from llmprod.serve.upstream import EngineState, Upstream
from llmprod.vllm import START_MARKER, read_startup, refusal


class EngineFailed(OperationFailed):
    """The engine did not become ready (exited, or timed out); the message names its log file."""


@dataclass(frozen=True)
class EngineCommand:
    kind: str  # "vllm" | "transformers"
    argv: tuple[str, ...]
    port: int
    model_id: str  # the `model` the engine expects in requests
    reason: str  # why this engine was chosen (said at start-up)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_engine(requested: str, vllm_path: str | None, has_gpu: bool) -> tuple[str, str]:
    """(engine, why) for --engine auto|vllm|transformers."""
    if requested == "vllm":
        if vllm_path is None:
            raise InputError("--engine vllm: no `vllm` on PATH",
                             hint="install vLLM in its own environment and pass --vllm-bin /path/to/venv/bin/vllm")
        return "vllm", "asked for with --engine vllm"
    if requested == "transformers":
        return "transformers", "asked for with --engine transformers"
    if vllm_path is None:
        return "transformers", "vLLM was not found (no `vllm` on PATH, no --vllm-bin)"
    if not has_gpu:
        return "transformers", f"vLLM was found ({vllm_path}) but no GPU is visible"
    return "vllm", f"vLLM found at {vllm_path} and a GPU is visible"


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vllm_command(vllm_path: str, model: str, served_name: str, port: int, options: EngineOptions,
                 reason: str) -> EngineCommand:
    # Quantization is not passed: vLLM reads `quantization_config` from the checkpoint and picks its
    # kernel (Marlin / Machete for compressed-tensors W4A16, awq_marlin for AWQ GEMM).
    argv = [vllm_path, "serve", model, "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", served_name]
    for name in VLLM_ONLY:
        value = getattr(options, name)
        if value is not None:
            argv += [_flag(name), str(value)]
    argv += list(options.extra_args)
    return EngineCommand("vllm", tuple(argv), port, served_name, reason)


# Without a GPU, transformers sizes its paged cache from total RAM (80% of it): on a laptop or a CI
# runner that is gigabytes of KV cache for a model that needs megabytes, and the first request stalls
# while it is allocated. On CPU llmprod caps it at 5% unless a --cb-* flag after `--` says otherwise.
CPU_CACHE_MEMORY_PERCENT = 0.05


def transformers_command(model: str, port: int, options: EngineOptions, reason: str,
                         cache_dir: Path | None = None, on_gpu: bool = True) -> EngineCommand:
    given = [_flag(name) for name in VLLM_ONLY if getattr(options, name) is not None]
    if given:
        raise InputError(f"{', '.join(given)} only apply to the vLLM engine",
                         hint="drop them, or serve with --engine vllm (pass embedded-engine flags after --)")
    argv = [sys.executable, "-m", "transformers.cli.transformers", "serve", model, "--host", "127.0.0.1",
            "--port", str(port), "--continuous-batching", "--log-level", "warning", *options.extra_args]
    if not on_gpu and not any(arg.startswith("--cb-") for arg in options.extra_args):
        argv += ["--cb-max-memory-percent", str(CPU_CACHE_MEMORY_PERCENT)]
    env = {}
    if cache_dir is not None:
        # transformers serve lists its hub cache on /v1/models and fails when the directory is missing.
        cache_dir.mkdir(parents=True, exist_ok=True)
        env["HF_HUB_CACHE"] = str(cache_dir)
    return EngineCommand("transformers", tuple(argv), port, model, reason, env)


def ends_with_this_process():
    """A preexec_fn for a child that must not outlive this process, however it ends (SIGKILL included): Linux
    sends the child SIGTERM when its parent dies (PR_SET_PDEATHSIG), so a killed `serve` leaves no engine
    holding the GPU and no gateway worker holding the port. None (nothing to run) elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    term = int(signal.SIGTERM)

    def set_parent_death_signal() -> None:
        prctl(1, term)  # PR_SET_PDEATHSIG

    return set_parent_death_signal


class EngineProcess:
    """One engine, in its own process group, its output appended to `log_path`."""

    def __init__(self, command: EngineCommand, log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.plan: dict = {}  # what was planned for it (a guard engine's memory share), for the ready document

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.command.env}
        with open(self.log_path, "ab") as log:
            log.write(f"\n{START_MARKER} {self.command.kind} engine: {' '.join(self.command.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.command.argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                             preexec_fn=ends_with_this_process())
            except OSError as exc:
                raise EngineFailed(f"could not start the {self.command.kind} engine: {exc}",
                                   hint=f"see {self.log_path}") from exc
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    async def wait_ready(self, timeout: float, upstream: Upstream) -> None:
        """Poll the engine's /health until it answers 200; the engine exiting or the timeout raise EngineFailed."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.exit_code()
            if code is not None:
                raise self._exit_error(code)
            if (await upstream.health(timeout=2.0)).ok:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise EngineFailed(f"the {self.command.kind} engine was not ready after {timeout:.0f} s",
                                   hint=f"its log is {self.log_path}; raise --engine-timeout for large models")
            await asyncio.sleep(0.25)

    def _exit_error(self, code: int) -> Exception:
        """Why the engine exited before it was ready: vLLM refusing its configuration is bad input (exit 2)
        in vLLM's own words; anything else is a failure, with the cause from the log."""
        if self.command.kind == "vllm":
            startup = read_startup(self.log_path)
            refused = refusal(startup, self.log_path)
            if refused is not None:
                return refused
            if startup.error:
                return EngineFailed(f"vLLM exited with code {code} before it was ready: {startup.error[:300]}",
                                    hint=f"its log is {self.log_path}")
        return EngineFailed(f"the {self.command.kind} engine exited with code {code} before it was ready",
                            hint=f"its log is {self.log_path}: {last_line(self.log_path)}")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the engine's whole process group, then SIGKILL what is left after `grace` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            self.proc.wait()
        # Children that outlived the leader (workers) are still in the group.
        deadline = time.monotonic() + grace
        while _group_exists(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_line(path: Path, limit: int = 200) -> str:
    """The log's last non-empty line, for error messages (the whole log stays on disk)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:limit] if lines else "(empty log)"


# Seconds between checks of a supervised engine: its process, and its /health once a request marked it down.
HEALTH_POLL = 0.2


async def mark_up_if_healthy(state: EngineState, upstream: Upstream) -> None:
    """An engine marked down by a failed request (a transient failure) is marked up once it answers /health."""
    if not state.up and (await upstream.health(timeout=2.0)).ok:
        state.mark_up()


class Supervisor:
    """Restarts a dead engine with exponential backoff; requests get 503 meanwhile."""

    BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)

    def __init__(self, engine: EngineProcess, state: EngineState, ready_timeout: float,
                 on_event: Callable[[str], None], on_restart: Callable[[], None] | None = None,
                 backoff: tuple[float, ...] | None = None) -> None:
        self.engine = engine
        self.state = state
        self.ready_timeout = ready_timeout
        self.on_event = on_event
        self.on_restart = on_restart or (lambda: None)
        self.backoff = backoff or self.BACKOFF
        self.stopping = False

    async def run(self, upstream: Upstream) -> None:
        failures = 0
        while not self.stopping:
            await asyncio.sleep(HEALTH_POLL)
            if self.engine.alive():
                await mark_up_if_healthy(self.state, upstream)
                continue
            if self.stopping:
                return
            code = self.engine.exit_code()
            self.state.mark_down(f"the engine exited (code {code}) and is being restarted")
            # What the dead leader spawned (vLLM's EngineCore and workers) may outlive it, holding GPU memory
            # the next start needs: the old group goes first.
            await asyncio.to_thread(self.engine.stop, 5.0)
            delay = self.backoff[min(failures, len(self.backoff) - 1)]
            self.on_event(f"the {self.engine.command.kind} engine exited with code {code}; "
                          f"restarting in {delay:.0f} s (log: {self.engine.log_path})")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                self.engine.start()
                await self.engine.wait_ready(self.ready_timeout, upstream)
            except EngineFailed as exc:
                failures += 1
                self.on_event(f"restart failed: {exc.one_line()}")
                continue
            failures = 0
            self.on_restart()
            self.state.mark_up()
            self.on_event(f"the {self.engine.command.kind} engine is back (pid {self.engine.pid})")
