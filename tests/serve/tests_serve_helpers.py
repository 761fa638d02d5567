"""Helpers of the serve tests (conftest.py puts this directory on sys.path)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


def _load_fake_engine():
    import importlib.util

    spec = importlib.util.spec_from_file_location("llmprod_tests_fake_engine", FAKE_ENGINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_app = _load_fake_engine().make_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float = 20.0, every: float = 0.05) -> None:
    """Poll a condition; the timeout only bounds a hang, it is not a performance assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def engine_stats(url: str) -> dict:
    return httpx.get(f"{url}/stats", timeout=5).json()


class ThreadServer:
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
