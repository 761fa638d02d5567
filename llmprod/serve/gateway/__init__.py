"""The gateway: an ASGI app in front of one OpenAI-compatible engine, in small parts.

    app.py         routes and wiring (Gateway, GatewayConfig)
    middleware.py  request ids and the JSON 500, the bearer key, the cap on generations in flight
    requests.py    reading and checking a request; the texts the input guardrails see
    relay.py       streaming an answer through, timed; guarded.py: the same with the output scanner
    errors.py      every answer of the gateway's own, in OpenAI's error shape

It talks to the engine only through `llmprod.serve.upstream.Upstream`.
"""

from llmprod.serve.gateway.app import Gateway, GatewayConfig

__all__ = ["Gateway", "GatewayConfig"]
