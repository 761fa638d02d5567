"""Real HTTP servers on loopback, each in a thread: the fake engine and gateways in front of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from llmprod.guardrails import PolicyGuard
from llmprod.serve.gateway import Gateway, GatewayConfig
from llmprod.serve.metrics import GatewayMetrics
from llmprod.serve.upstream import EngineState
from llmprod.testing.fake_engine import make_app, vllm_executable
from llmprod.testing.servers import ThreadServer


@pytest.fixture
def model_dirs(tmp_path, monkeypatch):
    """./m, ./some-model and ./fake: model directories (a config.json each) in a working directory of the test's own,
    so serve's check of MODEL passes and what the test is about is reached (vLLM itself is faked)."""
    monkeypatch.chdir(tmp_path)
    for name in ("m", "some-model", "fake"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    return tmp_path


@pytest.fixture
def fake_vllm(tmp_path):
    """A `vllm` executable that runs the fake engine (vLLM itself cannot run here)."""
    return vllm_executable(tmp_path)


@pytest.fixture(scope="module")
def fake_engine():
    server = ThreadServer(make_app(tokens=8, itl=0.01)).start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway():
    """start_gateway(upstream_url, policy=None, registry=None, guard=None, upstream=None, **GatewayConfig fields)
    → (URL, Gateway).

    A policy is built into a guard that reports to the gateway's metrics, as `llmprod serve` does; `registry`
    swaps check types (a model check the test controls); `guard` takes any object with the Guard interface;
    `upstream` an Upstream in place of the HTTP client (llmprod.testing.scripted: reads exactly as written)."""
    servers = []

    def start(upstream_url: str | None = None, policy=None, registry=None, guard=None, supervised: bool = False,
              state: EngineState | None = None, upstream=None, **config):
        state = state or EngineState(upstream_url or upstream.base_url, supervised=supervised)
        metrics = GatewayMetrics()
        if policy is not None:
            guard = PolicyGuard(policy, observer=metrics.guard_observer(), registry=registry)
        gateway = Gateway(state, GatewayConfig(**config), guard=guard, metrics=metrics, upstream=upstream)
        server = ThreadServer(gateway.app).start()
        servers.append(server)
        return server.url, gateway

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve_process():
    """serve_process(*args, env=None) → (process, ready document): `llmprod serve --json ARGS` as a user runs it,
    once it is ready; killed at the end of the test if it is still running."""
    procs = []

    def start(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, dict]:
        proc = subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--json", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        procs.append(proc)
        line = proc.stdout.readline()
        buffer = line
        while line and line.rstrip("\n") != "}" and buffer.strip() != "{}":  # the document's own closing brace
            line = proc.stdout.readline()
            buffer += line
        if not buffer:
            proc.wait(timeout=30)
            raise AssertionError(f"serve did not start: {proc.stderr.read()}")
        return proc, json.loads(buffer)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
