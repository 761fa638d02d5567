"""Loopback servers for tests: an ASGI app on a free port in a thread, and polling helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from llmprod.serve.engines import free_port

__all__ = ["ThreadServer", "free_port", "proc_stat", "running", "serve_ready", "wait_ready", "wait_until"]


def proc_stat(pid: int) -> tuple[str, list[str]]:
    """A process's name and the fields of Linux's /proc/PID/stat after it (the name may hold spaces and
    parentheses): [0] state, [1] parent, [2] process group, [11] and [12] user and system CPU in clock ticks.
    OSError when the process is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return proc_stat(pid)[1][0] != "Z"
    except OSError:
        return False


def wait_until(condition, timeout: float = 20.0, every: float = 0.05) -> None:
    """Poll a condition; the timeout only bounds a hang, it is not a performance assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def wait_ready(url: str, timeout: float = 60.0, proc=None) -> None:
    """Until `url` answers 200 (a server's /health); fails early if `proc` (a Popen) has exited."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def serve_ready(proc) -> dict:
    """The ready document of a `llmprod serve --json` process (Popen, text stdout), printed indented over
    several lines once the gateway listens; a RuntimeError if serve exits or prints its error instead."""
    import json

    text = ""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}".strip())
        text += line
        try:
            doc = json.loads(text)
        except ValueError:
            continue
        if "error" in doc:
            raise RuntimeError(f"serve did not start: {doc['error']['message']}")
        return doc


class ThreadServer:
    """`ThreadServer(app).start()` serves an ASGI app on 127.0.0.1:`port` until `stop()`."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "ThreadServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
