"""The gateway's ASGI layers, outermost first: request ids and the JSON 500 (ErrorShield), the bearer key on
/v1 (BearerAuth), and the cap on generations in flight (ConcurrencyLimit). Each is a plain ASGI callable
wrapping the next, as Starlette's middleware are."""

from __future__ import annotations

import math
import uuid

from llmprod.serve.gateway.errors import GatewayError, internal_error, log_exception
from llmprod.serve.keys import CURRENT
from llmprod.serve.metrics import GatewayMetrics

# The generation routes, by path, and the route label their metrics carry.
GENERATION = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses"}


class ErrorShield:
    """Every HTTP request gets an id (the `x-request-id` response header, which the openai client exposes as
    `request_id`), and an exception that escapes the app is logged with that id and, when no response has
    started, answered with a JSON 500 in OpenAI's shape instead of plain text."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, see the docstring
            if not getattr(exc, "_llmprod_logged", False):
                log_exception(request_id, scope.get("method", "?"), scope.get("path", "?"), exc)
            if not started:
                await internal_error(request_id).response()(scope, receive, send_with_id)


async def json_500(request, exc: Exception):
    """Starlette's handler of last resort (it sends this, then re-raises to ErrorShield): logged before the
    answer goes out, so the log line exists by the time the client reads the request id."""
    log_exception(request.state.request_id, request.method, request.url.path, exc)
    exc._llmprod_logged = True
    return internal_error(request.state.request_id).response()


async def _refuse(error: GatewayError, scope, receive, send, metrics: GatewayMetrics) -> None:
    route = GENERATION.get(scope["path"])
    if route is not None:
        metrics.requests.labels(route, str(error.status)).inc()
    await error.response()(scope, receive, send)


class BearerAuth:
    """/v1 wants `Authorization: Bearer <key>` of a known client (--api-key, or --api-keys: keys.KeyRing);
    /health and /metrics stay open. On the generation routes the client's requests-per-minute and
    tokens-per-minute limits apply (429 with Retry-After), the client's name labels its metrics, and it is
    the current client while its answer is counted (its tokens are charged to it)."""

    def __init__(self, app, keys, metrics: GatewayMetrics) -> None:
        self.app = app
        self.keys = keys  # a keys.KeyRing, or None: no authentication
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if self.keys is None or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        client = self.keys.identify(token.strip()) if scheme.lower() == b"bearer" and token.strip() else None
        if client is None:
            await _refuse(GatewayError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                                       "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"}),
                          scope, receive, send, self.metrics)
            return
        if scope["method"] != "POST" or scope["path"] not in GENERATION:
            await self.app(scope, receive, send)
            return
        refused = self.keys.admit(client.name)
        if refused is not None:
            limit, wait = refused
            self.metrics.rate_limited.labels(client.name, limit).inc()
            self.metrics.client_requests.labels(client.name, "429").inc()
            retry = max(1, math.ceil(wait))
            await _refuse(GatewayError(429, f"this key is over its {limit.replace('_', ' ')}; retry in {retry} s",
                                       "rate_limit_error", "rate_limit_exceeded", {"Retry-After": str(retry)}),
                          scope, receive, send, self.metrics)
            return
        status = "000"

        async def send_noting_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        token_ = CURRENT.set((self.keys, client.name))
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            CURRENT.reset(token_)
            self.metrics.client_requests.labels(client.name, status).inc()


class ConcurrencyLimit:
    """At most `limit` generations in flight; more get 429 with Retry-After. A slot is taken once the request's
    body has arrived whole (a client sending it slowly holds no slot) and held until the answer has gone out
    whole (a stream's last byte), so streams count for as long as they run."""

    def __init__(self, app, limit: int, metrics: GatewayMetrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION:
            await self.app(scope, receive, send)
            return
        holding = False

        async def receive_then_take_a_slot():
            nonlocal holding
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False) and not holding:
                if self.in_flight >= self.limit:
                    # Raised inside the route's body read: the app answers it like any GatewayError.
                    raise GatewayError(429, f"the gateway is at --max-concurrency ({self.limit}); retry after the "
                                       "Retry-After delay", "rate_limit_error", "too_many_requests",
                                       {"Retry-After": "1"})
                holding = True
                self.in_flight += 1
                self.metrics.in_flight.inc()
            return message

        try:
            await self.app(scope, receive_then_take_a_slot, send)
        finally:
            if holding:
                self.in_flight -= 1
                self.metrics.in_flight.dec()
