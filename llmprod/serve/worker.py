"""The gateway processes of `llmprod serve --workers N`: the listening socket shared, the engine not.

One Python process streams about 20,000-30,000 tokens a second through the gateway before its core is full
(more with output guardrails, which scan every token). `--workers N` runs N gateway processes on one port:
`serve` itself is the first (it also starts and supervises the engine), and it starts N - 1 more of this
module, each handed the listening socket and the settings as JSON. The kernel spreads connections between
them. Each process builds its own guard (guard models load N times) and keeps its own concurrency slots
(`--max-concurrency` divided between them); the metrics of all of them live in one directory and every
`/metrics` sums them. A worker learns that the engine is down from its own requests failing, and that it is
back from the engine's /health, as `serve` does between restarts.

    python -m llmprod.serve.worker FD SETTINGS_JSON      (started by `serve`, not by hand)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from llmprod.output import Output
from llmprod.serve.engines import HEALTH_POLL, ends_with_this_process, mark_up_if_healthy
from llmprod.serve.metrics import shared_between_processes
from llmprod.serve.run import (GatewaySettings, build_gateway, read_policy, reload_keys, run_loop,
                               start_serving)


async def watch_recovery(gateway) -> None:
    """This process's view of the supervised engine follows it back up, as `serve`'s own Supervisor's does
    (which also restarts the engine)."""
    while True:
        await asyncio.sleep(HEALTH_POLL)
        await mark_up_if_healthy(gateway.state, gateway.upstream)


async def _serve(settings: GatewaySettings, sock: socket.socket, gateway) -> None:
    server, serving = await start_serving(gateway, sock, settings.spec.grace_period)
    if server.started:
        print("ready", flush=True)  # to `serve`, on the pipe it reads; anything later goes to stderr
        os.dup2(2, 1)
    recovery = asyncio.ensure_future(watch_recovery(gateway)) if settings.supervised else None
    try:
        await serving
    finally:
        if recovery is not None:
            recovery.cancel()
            await asyncio.gather(recovery, return_exceptions=True)
        await gateway.upstream.close()


class WorkerPool:
    """`serve`'s side: the N - 1 extra gateway processes, started once the engine answers, replaced if one
    dies while serving, and stopped (SIGTERM: they drain like `serve`) before the engine is."""

    def __init__(self, settings: GatewaySettings, sock: socket.socket, out) -> None:
        self.settings = settings
        self.sock = sock
        self.out = out
        self.procs: dict[int, asyncio.subprocess.Process] = {}  # index → process
        self.stopping = False
        self._watch: asyncio.Task | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for _, p in sorted(self.procs.items())]

    async def start(self, timeout: float) -> None:
        await asyncio.gather(*(self._spawn(i, timeout) for i in range(1, self.settings.spec.workers)))
        self._watch = asyncio.ensure_future(self._replace_the_dead(timeout))

    async def _spawn(self, index: int, timeout: float) -> None:
        from dataclasses import replace

        from llmprod.errors import OperationFailed

        fd = self.sock.fileno()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "llmprod.serve.worker", str(fd), replace(self.settings, index=index).to_json(),
            stdout=asyncio.subprocess.PIPE, pass_fds=(fd,), preexec_fn=ends_with_this_process())
        self.procs[index] = proc
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() != b"ready":
            raise OperationFailed(f"gateway worker {index} did not start (its messages are above)",
                                  hint="run with --workers 1 to see the error on its own")

    async def _replace_the_dead(self, timeout: float) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        while not self.stopping and self.procs:
            waits = {asyncio.ensure_future(p.wait()): i for i, p in self.procs.items()}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if self.stopping:
                return
            for task in done:
                index = waits[task]
                dead = self.procs[index]
                mark_process_dead(dead.pid, self.settings.metrics_dir)
                self.out.warn(f"gateway worker {index} (pid {dead.pid}) exited with code {dead.returncode}; "
                              "starting another")
                try:
                    await self._spawn(index, timeout)
                except Exception as exc:  # noqa: BLE001 - the others keep serving; say why this one is gone
                    self.out.warn(f"gateway worker {index} could not be restarted: {exc}")
                    self.procs.pop(index, None)

    async def terminate(self) -> None:
        """SIGTERM to each, at once: they stop accepting and drain as `serve` does (called when `serve` begins to
        stop, so no process keeps accepting on the shared socket while another drains)."""
        if self.stopping:
            return
        self.stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def stop(self, grace: float) -> None:
        """terminate(), then wait for each to finish its in-flight requests (`grace` seconds), then SIGKILL."""
        from prometheus_client.multiprocess import mark_process_dead

        await self.terminate()
        for proc in self.procs.values():
            if proc.returncode is None:  # again, in case terminate() was cut short: a second SIGTERM is harmless
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace + 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
            mark_process_dead(proc.pid, self.settings.metrics_dir)


def main(argv: list[str] | None = None) -> int:
    fd, text = (argv if argv is not None else sys.argv[1:])[:2]
    settings = GatewaySettings.from_json(text)
    out = Output(json_mode=True)  # messages to stderr, which is `serve`'s
    with shared_between_processes(settings.metrics_dir):
        gateway, _ = build_gateway(settings, out, read_policy(settings.spec))
        if settings.spec.api_keys is not None and gateway.keys is not None:
            signal.signal(signal.SIGHUP, lambda *_: reload_keys(settings.spec.api_keys, gateway.keys, out))
        sock = socket.socket(fileno=int(fd))
        run_loop(_serve(settings, sock, gateway))
    return 0


if __name__ == "__main__":
    sys.exit(main())

