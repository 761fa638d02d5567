from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SERVER = Path(__file__).with_name("timed_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def timed_server():
    """Start timed servers on loopback; every one is stopped when the module's tests end."""
    procs = []

    def start(*args: str) -> str:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), *args])
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/stats", timeout=1.0)
                return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the timed server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)
