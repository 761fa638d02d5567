"""The gateway's routes and their wiring: an ASGI app in front of one OpenAI-compatible engine.

    ErrorShield → BearerAuth → ConcurrencyLimit → routes:
    /health, /metrics                  open
    /v1/models                         the served names, or the engine's list (--upstream)
    /v1/chat/completions, /v1/completions, /v1/responses
        read and check the request → input guardrails → the engine (Upstream) → the answer, whole
        (output guardrails on every field, fields.py) or streamed (relay.py; guarded.py, responses.py)

Input guardrails in a policy's `input_mode: parallel` (the default): the deterministic checks run first and
redact the request; it then goes to the engine at once while the model checks run (the prefill overlaps
them), and the answer's first byte (its status line included) waits for their verdict. A block cancels the
engine's request (the connection drops; vLLM aborts it) and answers the usual 400.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace

from llmprod.guardrails.types import CheckUnavailable, Guard
from llmprod.serve.gateway.errors import (GatewayError, bad_request, from_engine, guard_unavailable, unavailable,
                                          upstream_failed)
from llmprod.serve.gateway.fields import Unguardable, check_choice, refuse_unguardable
from llmprod.serve.gateway.guarded import GuardedRelay
from llmprod.serve.gateway.middleware import BearerAuth, ConcurrencyLimit, ErrorShield, json_500
from llmprod.serve.gateway.relay import CancellingStream, StreamRelay, model_renamer
from llmprod.serve.gateway.requests import check_fields, input_texts, read_json
from llmprod.serve.gateway.responses import ResponsesRelay, check_response
from llmprod.serve.metrics import GatewayMetrics
from llmprod.serve.spec import ServeSpec
from llmprod.serve.upstream import AiohttpUpstream, Answer, EngineState, Upstream, UpstreamError

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "responses": "/v1/responses"}


@dataclass(frozen=True)
class GatewayConfig:
    api_key: str | None = None  # one client, "default"; or `keys`
    keys: object | None = None  # a keys.KeyRing (--api-keys), reloadable
    max_concurrency: int = ServeSpec.max_concurrency
    max_body_size: int = ServeSpec.max_body_size
    request_timeout: float = ServeSpec.request_timeout
    # Names clients may ask for → the name the engine expects. None: pass `model` through (--upstream).
    models: dict[str, str] | None = None


class Gateway:
    def __init__(self, state: EngineState, config: GatewayConfig, guard: Guard | None = None,
                 metrics: GatewayMetrics | None = None, upstream: Upstream | None = None) -> None:
        self.state = state
        self.config = config
        self.guard = guard
        self.metrics = metrics or GatewayMetrics()
        self.upstream = upstream or AiohttpUpstream(state.base_url, config.request_timeout)
        # The KeyRing in force: --api-keys, or --api-key as one client named "default", or None (no auth).
        self.keys = config.keys
        if self.keys is None and config.api_key:
            from llmprod.serve.keys import KeyRing, single_key

            self.keys = KeyRing(single_key(config.api_key))
        self.app = self._build_app()

    def _build_app(self):
        from contextlib import asynccontextmanager
        from functools import partial

        from starlette.applications import Starlette
        from starlette.routing import Route

        @asynccontextmanager
        async def lifespan(_app):
            yield
            await self.upstream.close()
            aclose = getattr(self.guard, "aclose", None)
            if aclose is not None:
                await aclose()

        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route(PATHS["chat"], partial(self.generate, "chat"), methods=["POST"]),
            Route(PATHS["completions"], partial(self.generate, "completions"), methods=["POST"]),
            Route(PATHS["responses"], partial(self.generate, "responses"), methods=["POST"]),
            Route("/v1/{rest:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
        app = Starlette(routes=routes, lifespan=lifespan,
                        exception_handlers={GatewayError: lambda _r, exc: exc.response(), Exception: json_500})
        limited = ConcurrencyLimit(app, self.config.max_concurrency, self.metrics)
        return ErrorShield(BearerAuth(limited, self.keys, self.metrics))

    # -- open routes ----------------------------------------------------------------------------------------
    async def health(self, request):
        from starlette.responses import JSONResponse

        if self.state.supervised and not self.state.up:
            engine = {"status": "down", "reason": self.state.reason}
        else:
            ok, reason = await self.upstream.health()
            engine = {"status": "ok"} if ok else {"status": "down", "reason": reason}
        body = {"status": "ok" if engine["status"] == "ok" else "unavailable", "gateway": "ok", "engine": engine}
        return JSONResponse(body, status_code=200 if engine["status"] == "ok" else 503)

    async def metrics_endpoint(self, request):
        from starlette.responses import Response

        self.metrics.engine_up.set(1 if self.state.up else 0)
        payload, content_type = self.metrics.render()
        return Response(payload, media_type=content_type)

    # -- /v1 ------------------------------------------------------------------------------------------------
    async def not_found(self, request):
        raise GatewayError(404, f"{request.method} {request.url.path} is not served here "
                           "(routes: /v1/chat/completions, /v1/completions, /v1/responses, /v1/models)",
                           "invalid_request_error", "unknown_url")

    async def models(self, request):
        from starlette.responses import JSONResponse, Response

        if self.config.models is not None:
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmprod"} for name in self.config.models]
            return JSONResponse({"object": "list", "data": data})
        answer = await self._call("GET", "/v1/models", None)
        if answer.status != 200:
            return from_engine(answer.status, answer.content, self.state).response()
        return Response(answer.content, status_code=200, media_type=answer.content_type)

    async def generate(self, route: str, request):
        arrived = time.perf_counter()
        status, streaming, verdict = 500, False, None
        try:
            body = await read_json(request, self.config.max_body_size)
            asked = body.get("model")
            context, verdict = await self._check_input(route, body)
            rename = model_renamer(body["model"], asked) if self.config.models is not None else None
            # The gateway's choice, said to the engine: OpenAI's default is whole, some engines' (transformers
            # serve on /v1/responses) is streamed.
            body["stream"] = bool(body.get("stream"))
            if body["stream"]:
                response = await self._stream(route, body, context, arrived, request.state.request_id, rename,
                                              verdict)
                streaming = True  # the relay counts the request when the stream ends
                return response
            response = await self._complete(route, body, context, arrived, rename, verdict)
            status = response.status_code
            return response
        except GatewayError as exc:
            status = exc.status
            return exc.response()
        except CheckUnavailable as exc:
            error = guard_unavailable(exc)
            status = error.status
            return error.response()
        finally:
            if verdict is not None and not verdict.done():  # the request failed before the verdict was awaited
                verdict.cancel()
            if not streaming:
                self.metrics.requests.labels(route, str(status)).inc()

    async def _check_input(self, route: str, body: dict) -> tuple[str, asyncio.Future | None]:
        """Validate the request and run the input guardrails (redacting in place): the user turn an answer is
        judged against, and (input_mode parallel) the model checks' verdict still to come, or None."""
        check_fields(body, self.config.models)
        texts = input_texts(route, body)
        if not self.state.up:
            raise unavailable(f"the engine is not available: {self.state.reason}")
        if self.guard is not None and self.guard.has_output_checks:
            refuse_unguardable(route, body)
        if self.guard is None or not self.guard.has_input_checks:
            return texts.user_context(), None
        if texts.opaque:
            raise bad_request("token-id prompts cannot be checked by the input guardrails; send text")
        if texts.unreadable:
            raise bad_request(f"the input guardrails cannot read {texts.unreadable}; send text parts",
                              "unguarded_field")
        pending = None
        if getattr(self.guard, "input_mode", "before") == "parallel":
            decision, pending = self.guard.start_input(texts.values, texts.untrusted())
        else:
            decision = await self.guard.check_input(texts.values, texts.untrusted())
        if decision.blocked:
            raise input_blocked(decision)
        if decision.texts != texts.values:
            texts.write_back(decision.texts)
        return texts.user_context(), pending

    async def _behind_verdict(self, route: str, upstream, verdict: asyncio.Future | None, drop=None):
        """The engine's answer (awaitable `upstream`, already on its way) once the input checks' `verdict` has
        passed. A block or a failed check cancels the engine's request first: `drop` closes what the engine
        already answered (a stream's connection), so it aborts the generation."""
        if verdict is None:
            return await upstream
        call = asyncio.ensure_future(upstream)
        try:
            decision = await verdict
        except BaseException:
            await _cancel(call, drop)
            raise
        if decision.blocked:
            await _cancel(call, drop)
            self.metrics.input_cancelled.labels(route).inc()
            raise input_blocked(decision)
        return await call

    # -- the engine -----------------------------------------------------------------------------------------
    async def _call(self, method: str, path: str, payload: dict | None) -> Answer:
        try:
            return await self.upstream.call(method, path, payload)
        except UpstreamError as exc:
            raise upstream_failed(exc, self.state, self.config.request_timeout) from None

    async def _complete(self, route: str, payload: dict, context: str, arrived: float, rename=None, verdict=None):
        from starlette.responses import JSONResponse

        answer = await self._behind_verdict(route, self._call("POST", PATHS[route], payload), verdict)
        if rename is not None:
            answer = replace(answer, content=rename(answer.content))
        if answer.status != 200:
            return from_engine(answer.status, answer.content, self.state).response()
        try:
            data = json.loads(answer.content)
        except ValueError:
            raise GatewayError(502, "the engine answered with something that is not JSON",
                               "upstream_error", "bad_upstream_response") from None
        body_key = "output" if route == "responses" else "choices"
        if not isinstance(data, dict) or not isinstance(data.get(body_key), list):
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                return from_engine(502, answer.content, self.state).response()  # an error sent with a 200
            raise GatewayError(502, f"the engine answered without `{body_key}`", "upstream_error",
                               "bad_upstream_response")
        self.metrics.count_usage(route, data.get("usage"))
        if self.guard is not None and self.guard.has_output_checks:
            try:
                await self._check_answer(route, data, context)
            except Unguardable as exc:
                raise exc.error() from None
        self.metrics.e2e.labels(route).observe(time.perf_counter() - arrived)
        return JSONResponse(data)

    async def _check_answer(self, route: str, data: dict, context: str) -> None:
        """The output guardrails on every field of every choice of a whole answer: redacted in place, or the
        choice emptied with finish_reason content_filter (a response: marked incomplete)."""
        fields = self.metrics.guard_fields

        def on_field(field: str) -> None:
            fields.labels(route, field).inc()

        if route == "responses":
            await check_response(self.guard, data, context, on_field)
            return
        for choice in data["choices"]:
            if not isinstance(choice, dict):
                raise Unguardable("choices[]")
            await check_choice(self.guard, choice, route == "chat", context, on_field)

    async def _stream(self, route: str, payload: dict, context: str, arrived: float, request_id: str, rename=None,
                      verdict=None):
        options = payload.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        if route != "responses":  # a response's usage comes in response.completed
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        try:
            response = await self._behind_verdict(route, self.upstream.stream(PATHS[route], payload), verdict,
                                                  drop=lambda stream: stream.close())
        except UpstreamError as exc:
            raise upstream_failed(exc, self.state, self.config.request_timeout) from None
        if response.status != 200:
            try:
                content = await response.read()
            finally:
                response.release()
            raise from_engine(response.status, content, self.state)
        args = (self.metrics, route, response, client_wants_usage, arrived, request_id)
        if self.guard is not None and self.guard.has_output_checks:
            kind = ResponsesRelay if route == "responses" else GuardedRelay
            relay = kind(*args, guard=self.guard, context=context)
        else:
            relay = StreamRelay(*args)
        relay.rename = rename
        return CancellingStream(relay.run(), on_close=relay.close, media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def input_blocked(decision) -> GatewayError:
    return GatewayError(400, "the request was blocked by the input guardrails (categories: "
                        f"{', '.join(decision.categories)})", "invalid_request_error", "content_policy_violation")


async def _cancel(call: asyncio.Future, drop) -> None:
    """Cancel the engine's request; if it had already answered (a stream's headers), close that answer."""
    call.cancel()
    done = (await asyncio.gather(call, return_exceptions=True))[0]
    if drop is not None and not isinstance(done, BaseException):
        drop(done)
