"""Real HTTP servers on loopback, each in a thread: the fake engine and gateways in front of it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tests_serve_helpers import ThreadServer, make_app  # noqa: E402

from llmprod.serve.engines import UpstreamState  # noqa: E402
from llmprod.serve.gateway import Gateway, GatewayConfig  # noqa: E402


@pytest.fixture(scope="module")
def fake_engine():
    server = ThreadServer(make_app(tokens=8, itl=0.01)).start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway():
    """start_gateway(upstream_url, guard=None, **GatewayConfig fields) → (base URL, Gateway)."""
    servers = []

    def start(upstream_url: str, guard=None, supervised: bool = False, state: UpstreamState | None = None,
              **config):
        state = state or UpstreamState(upstream_url, supervised=supervised)
        gateway = Gateway(state, GatewayConfig(**config), guard=guard)
        if guard is not None and hasattr(guard, "attach_metrics"):
            guard.attach_metrics(gateway.metrics)
        server = ThreadServer(gateway.app).start()
        servers.append(server)
        return server.url, gateway

    yield start
    for server in servers:
        server.stop()
