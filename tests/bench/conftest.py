from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmprod.testing.servers import free_port

SERVER = Path(__file__).with_name("timed_server.py")


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
