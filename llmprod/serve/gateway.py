"""The gateway: an ASGI app in front of one OpenAI-compatible upstream.

auth → limits → input guardrails → upstream (one pooled async client) → output guardrails → client,
measuring TTFT, inter-token latency, end-to-end latency and tokens at the gateway.

Streams are forwarded event by event. Without output checks the upstream's bytes go through unchanged
(parsed only to time them and to read the usage chunk); with output checks each text delta passes the
guard's incremental scanner and the chunk is re-encoded with what may be sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from llmprod.guardrails.types import CheckUnavailable, Guard
from llmprod.serve import sse
from llmprod.serve.engines import UpstreamState
from llmprod.serve.metrics import GatewayMetrics


@dataclass(frozen=True)
class GatewayConfig:
    api_key: str | None = None
    max_concurrency: int = 256
    max_body_size: int = 4 * 1024 * 1024
    request_timeout: float = 600.0
    # Names clients may ask for → the name the upstream expects. None: pass `model` through (--upstream).
    models: dict[str, str] | None = None


class GatewayError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str, code: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code)


def unavailable(message: str) -> GatewayError:
    return GatewayError(503, message, "service_unavailable", "engine_unavailable", {"Retry-After": "2"})


log = logging.getLogger("llmprod.gateway")


def guard_unavailable(exc: CheckUnavailable) -> GatewayError:
    """A check that could not answer: the request fails closed, never passes unchecked."""
    log.warning("guardrail %s on the %s failed (%s); the request was refused", exc.check, exc.stage,
                type(exc.cause).__name__)
    return GatewayError(503, f"the {exc.check} guardrail could not check the {exc.stage} ({type(exc.cause).__name__})"
                        "; the request was refused rather than passed unchecked", "service_unavailable",
                        "guardrail_unavailable", {"Retry-After": "5"})


class Gateway:
    def __init__(self, upstream: UpstreamState, config: GatewayConfig, guard: Guard | None = None,
                 metrics: GatewayMetrics | None = None) -> None:
        self.upstream = upstream
        self.config = config
        self.guard = guard
        self.metrics = metrics or GatewayMetrics()
        self.in_flight = 0
        self.client = None  # aiohttp.ClientSession: one connection pool to the upstream, opened in the lifespan
        self._api_key = config.api_key.encode() if config.api_key else None
        self.app = self._build_app()

    # -- app ----------------------------------------------------------------------------------------------
    def _build_app(self):
        from contextlib import asynccontextmanager
        from functools import partial

        from starlette.applications import Starlette
        from starlette.routing import Route

        @asynccontextmanager
        async def lifespan(_app):
            import aiohttp

            # aiohttp rather than httpx here: its C parser costs a fraction of httpx's per request and per
            # chunk, which is most of what the gateway adds to each token (benchmarks/gateway_overhead.py).
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=75, enable_cleanup_closed=True)
            # sock_read: the engine may stay silent at most this long (before the first byte or between
            # chunks) before the request is answered with 504.
            timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=self.config.request_timeout)
            # No cookie jar: the session serves every caller, and a jar would hand one caller's cookies
            # (set by the engine or a proxy in front of it) to the next.
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                             cookie_jar=aiohttp.DummyCookieJar()) as client:
                self.client = client
                yield
            self.client = None
            aclose = getattr(self.guard, "aclose", None)
            if aclose is not None:
                await aclose()

        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", partial(self.generate, "chat"), methods=["POST"]),
            Route("/v1/completions", partial(self.generate, "completions"), methods=["POST"]),
            Route("/v1/{rest:path}", self.not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
        app = Starlette(routes=routes, lifespan=lifespan,
                        exception_handlers={GatewayError: lambda _r, exc: exc.response(), Exception: _json_500})
        return ErrorShield(app)

    # -- open routes ----------------------------------------------------------------------------------------
    async def health(self, request):
        from starlette.responses import JSONResponse

        engine = await self._engine_health()
        body = {"status": "ok" if engine["status"] == "ok" else "unavailable", "gateway": "ok", "engine": engine}
        return JSONResponse(body, status_code=200 if engine["status"] == "ok" else 503)

    async def _engine_health(self) -> dict:
        if self.upstream.supervised and not self.upstream.up:
            return {"status": "down", "reason": self.upstream.reason}
        import aiohttp

        try:
            async with self.client.get(f"{self.upstream.base_url}/health",
                                       timeout=aiohttp.ClientTimeout(total=5.0)) as response:
                status = response.status
        except Exception as exc:  # noqa: BLE001 - any transport failure means "down"
            return {"status": "down", "reason": f"{type(exc).__name__} reaching {self.upstream.base_url}"}
        if status != 200:
            return {"status": "down", "reason": f"/health answered HTTP {status}"}
        return {"status": "ok"}

    async def metrics_endpoint(self, request):
        from starlette.responses import Response

        self.metrics.engine_up.set(1 if self.upstream.up else 0)
        payload, content_type = self.metrics.render()
        return Response(payload, media_type=content_type)

    # -- /v1 ------------------------------------------------------------------------------------------------
    def _authorize(self, request) -> None:
        if self._api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._api_key):
            raise GatewayError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                               "authentication_error", "invalid_api_key", {"WWW-Authenticate": "Bearer"})

    async def not_found(self, request):
        self._authorize(request)
        raise GatewayError(404, f"{request.method} {request.url.path} is not served here "
                           "(routes: /v1/chat/completions, /v1/completions, /v1/models)",
                           "invalid_request_error", "unknown_url")

    async def models(self, request):
        from starlette.responses import JSONResponse

        self._authorize(request)
        if self.config.models is not None:
            data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmprod"} for name in self.config.models]
            return JSONResponse({"object": "list", "data": data})
        response = await self._upstream_call("GET", "/v1/models", None)
        return self._passthrough(response)

    async def generate(self, route: str, request):
        arrived = time.perf_counter()
        status, holds_slot, streaming = 500, False, False
        try:
            self._authorize(request)
            if self.in_flight >= self.config.max_concurrency:
                raise GatewayError(429, f"the gateway is at --max-concurrency ({self.config.max_concurrency}); "
                                   "retry after the Retry-After delay", "rate_limit_error", "too_many_requests",
                                   {"Retry-After": "1"})
            self.in_flight += 1
            self.metrics.in_flight.inc()
            holds_slot = True
            body = await self._read_json(request)
            payload, context = await self._prepare(route, body)
            if payload.get("stream"):
                response = await self._stream(route, payload, context, arrived, request.state.request_id)
                streaming = True  # the stream counts itself and releases the slot when it ends
                return response
            response = await self._complete(route, payload, context, arrived)
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
            if not streaming:
                if holds_slot:
                    self._release()
                self.metrics.requests.labels(route, str(status)).inc()

    def _release(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.dec()

    async def _read_json(self, request) -> dict:
        limit = self.config.max_body_size
        declared = request.headers.get("content-length")
        too_large = GatewayError(413, f"the request body is larger than --max-body-size ({limit} bytes)",
                                 "invalid_request_error", "request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}", "invalid_json") from None
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    async def _prepare(self, route: str, body: dict) -> tuple[dict, str]:
        """Validate, check input guardrails, map the model name. Returns (payload for upstream, context)."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("`model` is required (a string; GET /v1/models lists them)", "missing_model")
        if self.config.models is not None:
            if model not in self.config.models:
                raise GatewayError(404, f"model {model!r} is not served here; available: "
                                   f"{', '.join(self.config.models)}", "invalid_request_error", "model_not_found")
            body["model"] = self.config.models[model]
        if "stream" in body and not isinstance(body["stream"], bool):
            raise bad_request("`stream` must be true or false")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise bad_request("`max_tokens` must be a positive integer")
        texts = _input_texts(route, body)
        if not self.upstream.up:
            raise unavailable(f"the engine is not available: {self.upstream.reason}")
        context = texts.user_context()
        if self.guard is not None and self.guard.has_input_checks:
            if texts.opaque:
                raise bad_request("token-id prompts cannot be checked by the input guardrails; send text")
            decision = await self.guard.check_input(texts.values)
            if decision.blocked:
                raise GatewayError(400, "the request was blocked by the input guardrails (categories: "
                                   f"{', '.join(decision.categories)})", "invalid_request_error",
                                   "content_policy_violation")
            if decision.texts != texts.values:
                texts.write_back(decision.texts)
                context = texts.user_context()
        return body, context

    # -- upstream -------------------------------------------------------------------------------------------
    def _upstream_error(self, exc: Exception) -> GatewayError:
        import aiohttp

        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return GatewayError(504, f"the engine did not answer within --request-timeout "
                                f"({self.config.request_timeout:g} s)", "timeout", "upstream_timeout")
        if isinstance(exc, aiohttp.ClientError):
            if self.upstream.supervised:
                self.upstream.mark_down("the engine stopped answering")
            return unavailable(f"the engine is not reachable ({type(exc).__name__})")
        raise exc

    async def _upstream_call(self, method: str, path: str, payload: dict | None) -> "Answer":
        try:
            async with self.client.request(method, f"{self.upstream.base_url}{path}", json=payload) as response:
                return Answer(response.status, await response.read(),
                              response.headers.get("content-type", "application/json"))
        except Exception as exc:  # noqa: BLE001 - mapped to 503/504, anything else re-raised
            raise self._upstream_error(exc) from None

    def _passthrough(self, answer: "Answer"):
        """An upstream answer as-is when it is OK; errors re-shaped into OpenAI's error object."""
        from starlette.responses import JSONResponse, Response

        if answer.status == 200:
            return Response(answer.content, status_code=200, media_type=answer.content_type)
        return JSONResponse(_error_body(answer.status, answer.content), status_code=answer.status)

    async def _complete(self, route: str, payload: dict, context: str, arrived: float):
        from starlette.responses import JSONResponse

        path = "/v1/chat/completions" if route == "chat" else "/v1/completions"
        response = await self._upstream_call("POST", path, payload)
        if response.status != 200:
            answer = self._passthrough(response)
        else:
            try:
                data = json.loads(response.content)
            except ValueError:
                raise GatewayError(502, "the engine answered with something that is not JSON",
                                   "upstream_error", "bad_upstream_response") from None
            self._count_usage(route, data.get("usage"))
            if self.guard is not None and self.guard.has_output_checks:
                await self._guard_completion(route, data, context)
            answer = JSONResponse(data)
        if answer.status_code == 200:
            self.metrics.e2e.labels(route).observe(time.perf_counter() - arrived)
        return answer

    async def _guard_completion(self, route: str, data: dict, context: str) -> None:
        for choice in data.get("choices") or ():
            holder = choice.get("message") or {} if route == "chat" else choice
            key = "content" if route == "chat" else "text"
            text = holder.get(key)
            if not isinstance(text, str) or not text:
                continue
            decision = await self.guard.check_output(text, context)
            if decision.blocked:
                holder[key] = ""
                choice["finish_reason"] = "content_filter"
            else:
                holder[key] = decision.texts[0]

    def _count_usage(self, route: str, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.metrics.prompt_tokens.labels(route).inc(prompt)
        if isinstance(completion, int):
            self.metrics.output_tokens.labels(route).inc(completion)

    async def _stream(self, route: str, payload: dict, context: str, arrived: float, request_id: str):
        path = "/v1/chat/completions" if route == "chat" else "/v1/completions"
        options = payload.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        try:
            upstream = await self.client.post(f"{self.upstream.base_url}{path}", json=payload)
        except Exception as exc:  # noqa: BLE001
            raise self._upstream_error(exc) from None
        if upstream.status != 200:
            try:
                content = await upstream.read()
            finally:
                upstream.release()
            raise GatewayError(upstream.status, **_error_fields(upstream.status, content))
        guarded = self.guard is not None and self.guard.has_output_checks
        relay = StreamRelay(self, route, upstream, client_wants_usage, arrived,
                            self.guard.output_stream(context) if guarded else None, request_id)
        return CancellingStream(relay.run(), on_close=relay.close, media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@dataclass(frozen=True)
class Answer:
    """A whole (non-streamed) upstream answer."""

    status: int
    content: bytes
    content_type: str


class StreamRelay:
    """Forwards one upstream SSE stream to the client, timing it and applying the output guard."""

    def __init__(self, gateway: Gateway, route: str, upstream, client_wants_usage: bool, arrived: float,
                 scanner, request_id: str) -> None:
        self.gateway = gateway
        self.request_id = request_id
        self.route = route
        self.upstream = upstream
        self.client_wants_usage = client_wants_usage
        self.arrived = arrived
        self.scanner = scanner
        self.chat = route == "chat"
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.status = "200"
        self.closed = False
        self.text_in_batch = False
        self.usage: dict | None = None
        # labelled once: children of a labelled metric cost a lookup and a lock per labels() call
        self.ttft = gateway.metrics.ttft.labels(route)
        self.itl = gateway.metrics.itl.labels(route)

    def _sent_text(self) -> None:
        now = time.perf_counter()
        if self.first_text_at is None:
            self.first_text_at = now
            self.ttft.observe(now - self.arrived)
        else:
            self.itl.observe(now - self.last_text_at)
        self.last_text_at = now

    async def run(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for blob in sse.blobs(self.upstream.content.iter_any()):
                self.text_in_batch = False
                if self.scanner is None:
                    out = self._plain_batch(blob)
                else:
                    out = await self._guarded_batch(blob)
                if out:
                    if self.text_in_batch:
                        self._sent_text()
                    yield b"".join(out)
                if self.closed:
                    return
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            self.status = "504"
            yield sse.encode(GatewayError(504, "the engine stopped sending within --request-timeout",
                                          "timeout", "upstream_timeout").body())
        except aiohttp.ClientError as exc:
            self.status = "502"
            yield sse.encode(GatewayError(502, f"the engine's stream broke off ({type(exc).__name__})",
                                          "upstream_error", "upstream_stream_error").body())
        except CheckUnavailable as exc:
            self.status = "503"
            self._stop_upstream()
            yield sse.encode(guard_unavailable(exc).body())
        except Exception as exc:  # noqa: BLE001 - a bug mid-stream: the client still gets an error in OpenAI's shape
            self.status = "500"
            self._stop_upstream()
            log_exception(self.request_id, "POST", self.route, exc)
            yield sse.encode(internal_error(self.request_id).body())

    def _stop_upstream(self) -> None:
        self.closed = True
        self.upstream.close()  # drops the connection: the engine aborts the generation

    def _usage(self, payload: dict) -> bool:
        """Notes a chunk's usage; False when the chunk is to be dropped (usage only, and the client did
        not ask for it). The usage is stripped from a chunk that also carries choices, unless asked for.
        The last usage seen is counted when the stream ends: with vLLM's continuous usage stats every chunk
        carries the running totals, which must not be added up."""
        self.usage = payload["usage"]
        if not payload.get("choices"):
            return self.client_wants_usage
        if not self.client_wants_usage:
            payload.pop("usage", None)
        return True

    def _plain_batch(self, blob: bytes) -> list[bytes]:
        """The events of one read without output checks: forwarded as they came, without looking at single
        events, except a usage chunk, which is counted (and dropped or stripped if the client did not ask)."""
        out = []
        for piece, is_usage in sse.around_usage(blob):
            if is_usage:
                piece = self._plain_usage(piece)
                if piece is None:
                    continue
            elif sse.has_text(piece):
                self.text_in_batch = True
            out.append(piece)
        return out

    def _plain_usage(self, event: bytes) -> bytes | None:
        data = sse.data_of(event)
        if data is None:
            return event
        payload = sse.loads(data)
        if isinstance(payload.get("usage"), dict):
            if not self._usage(payload):
                return None
            if not self.client_wants_usage:
                event = sse.encode(payload)  # the usage stripped from a chunk with choices
        if sse.has_text(data):
            self.text_in_batch = True
        return event

    async def _guarded_batch(self, blob: bytes) -> list[bytes]:
        """The events of one read through the output scanner. Consecutive text deltas are scanned together,
        so scanning costs per read, not per token. What the scanner lets through unchanged goes out as the
        upstream's own bytes (one slice of the read); held or redacted text goes out as one chunk (the last
        delta's envelope)."""
        out: list[bytes] = []
        texts: list[str] = []
        run_start = run_end = 0  # blob[run_start:run_end]: the events the texts came in
        template: dict | None = None
        chat = self.chat

        async def flush_text() -> None:
            if not texts:
                return
            joined = "".join(texts)
            step = await self.scanner.feed(joined, tokens=len(texts))  # an event is a token (or a few)
            texts.clear()
            if step.blocked:
                out.extend(await self._block(template, step.text))
            elif step.verbatim:  # the usual case: the events go out as they came
                out.append(blob[run_start:run_end])
                self.text_in_batch = True
            elif step.text:
                _set_text(template, step.text, chat)
                self.text_in_batch = True
                out.append(sse.encode(template))

        for start, end, data in sse.events(blob):
            done = data is not None and data.strip() == sse.DONE
            if data is not None and not done:
                payload = sse.loads(data)
                if isinstance(payload.get("usage"), dict):
                    if not self._usage(payload):
                        continue
                else:
                    choices = payload.get("choices")
                    if choices and len(choices) == 1:  # one text delta, not the last: the common chunk
                        choice = choices[0]
                        text = sse.choice_text(choice, chat)
                        if text and not choice.get("finish_reason"):
                            if not texts:
                                run_start = start
                            texts.append(text)
                            run_end = end
                            template = payload
                            continue
            await flush_text()
            if self.closed:
                return out
            if data is None:  # a comment or keep-alive
                out.append(blob[start:end])
            elif done:
                out.extend(await self._flush())
                out.append(blob[start:end])
            else:
                choices = payload.get("choices") or []
                finish = next((c.get("finish_reason") for c in choices if c.get("finish_reason")), None)
                out.extend(await self._guarded(payload, sse.chunk_text(payload, chat), finish))
                if self.closed:
                    return out
        await flush_text()
        return out

    async def _guarded(self, payload: dict, text: str, finish: str | None) -> list[bytes]:
        step = await self.scanner.feed(text) if text else None
        emit = step.text if step else ""
        if step is not None and step.blocked:
            return await self._block(payload, emit)
        if finish is not None:
            tail = await self.scanner.finish()
            if tail.blocked:
                return await self._block(payload, emit + tail.text)
            emit += tail.text
        if text or emit:
            _set_text(payload, emit, self.chat)
        if emit:
            self.text_in_batch = True
        if emit or finish is not None or not text:
            return [sse.encode(payload)]
        return []

    async def _flush(self) -> list[bytes]:
        """At [DONE] without a finish chunk: whatever the scanner still holds back."""
        tail = await self.scanner.finish()
        if not (tail.text or tail.blocked):
            return []
        payload = {"object": "chat.completion.chunk" if self.chat else "text_completion",
                   "choices": [{"index": 0, "delta": {"content": tail.text}} if self.chat
                               else {"index": 0, "text": tail.text}]}
        if tail.blocked:
            _set_finish(payload, "content_filter")
        elif tail.text:
            self.text_in_batch = True
        return [sse.encode(payload)]

    async def _block(self, payload: dict, emit: str) -> list[bytes]:
        """End the stream: what was safe to send, then finish_reason content_filter, then [DONE]."""
        _set_text(payload, emit, self.chat)
        _set_finish(payload, "content_filter")
        payload.pop("usage", None)
        if emit:
            self.text_in_batch = True
        self._stop_upstream()
        return [sse.encode(payload), b"data: [DONE]\n\n"]

    async def close(self, completed: bool) -> None:
        """Called once when the response ends for any reason (done, client gone, error)."""
        if completed and not self.closed and self.upstream.content.at_eof():
            self.upstream.release()  # read to the end: the connection goes back to the pool
        else:
            self.upstream.close()  # client gone or stream cut: close it, which cancels the generation
        if self.scanner is not None:
            self.scanner.close()
        gateway = self.gateway
        gateway._count_usage(self.route, self.usage)
        status = self.status if completed else "499"  # nginx's "client closed request"
        gateway.metrics.requests.labels(self.route, status).inc()
        if completed:
            gateway.metrics.e2e.labels(self.route).observe(time.perf_counter() - self.arrived)
        gateway._release()


def _set_text(payload: dict, text: str, chat: bool) -> None:
    for i, choice in enumerate(payload.get("choices") or ()):
        value = text if i == 0 else ""
        if chat:
            choice.setdefault("delta", {})["content"] = value
        else:
            choice["text"] = value


def _set_finish(payload: dict, reason: str) -> None:
    for choice in payload.get("choices") or ():
        choice["finish_reason"] = reason


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(500, f"internal error in the gateway (request id {request_id}); the details are in its log",
                        "server_error", "internal_error")


def log_exception(request_id: str, method: str, path: str, exc: BaseException) -> None:
    """An unexpected exception, logged by request id with its type and where it was raised: never its message
    or locals, which may hold what the client sent."""
    frames = traceback.extract_tb(exc.__traceback__)[-8:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))
    log.error("request %s: %s %s raised %s at %s", request_id, method, path, type(exc).__name__, where or "?")


class ErrorShield:
    """The outermost ASGI layer: every HTTP request gets an id (the `x-request-id` response header, which the
    openai client exposes as `request_id`), and an exception that escapes the app is logged with that id and,
    when no response has started, answered with a JSON 500 in OpenAI's shape instead of plain text."""

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


async def _json_500(request, exc: Exception):
    """Starlette's handler of last resort (it sends this, then re-raises to ErrorShield): logged before the
    answer goes out, so the log line exists by the time the client reads the request id."""
    log_exception(request.state.request_id, request.method, request.url.path, exc)
    exc._llmprod_logged = True
    return internal_error(request.state.request_id).response()


class CancellingStream:
    """A streaming ASGI response that notices the client leaving at once, not at the next write.

    The body iterator runs beside a listener for `http.disconnect`; whichever ends first cancels the
    other. `on_close(completed)` always runs, which closes the upstream response: the engine sees its
    connection drop and aborts the generation.
    """

    def __init__(self, body: AsyncIterator[bytes], on_close, media_type: str, headers: dict[str, str]) -> None:
        self.body = body
        self.on_close = on_close
        self.headers = [(b"content-type", media_type.encode())] + [
            (k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope, receive, send) -> None:
        completed = False
        sender = asyncio.ensure_future(self._send_all(send))
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                sender.result()  # re-raise a failure of the body
                completed = True
        finally:
            for task in (sender, listener):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sender, listener, return_exceptions=True)
            await self.on_close(completed)

    async def _send_all(self, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        try:
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _error_fields(status: int, content: bytes) -> dict:
    error = _error_body(status, content)["error"]
    return {"message": error["message"], "type_": error["type"], "code": error["code"]}


def _error_body(status: int, content: bytes) -> dict:
    """The upstream's error in OpenAI's shape, whatever shape it came in."""
    message, type_, code = None, "upstream_error", f"upstream_http_{status}"
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        error = data.get("error", data.get("detail"))
        if isinstance(error, dict):
            message = error.get("message")
            type_ = error.get("type") or type_
            code = error.get("code") or code
        elif isinstance(error, str):
            message = error
        elif isinstance(data.get("message"), str):
            message = data["message"]
    if not message:
        message = f"the engine answered HTTP {status}"
    if 400 <= status < 500 and type_ == "upstream_error":
        type_ = "invalid_request_error"
    return {"error": {"message": str(message), "type": str(type_), "code": str(code), "param": None}}


class _Texts:
    """The checkable texts of a request, and how to write redacted versions back."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._setters: list = []
        self.roles: list[str] = []
        self.opaque = False

    def add(self, text: str, role: str, setter) -> None:
        self.values.append(text)
        self.roles.append(role)
        self._setters.append(setter)

    def write_back(self, texts: list[str]) -> None:
        for setter, old, new in zip(self._setters, self.values, texts):
            if old != new:
                setter(new)
        self.values = list(texts)

    def user_context(self) -> str:
        users = [t for t, r in zip(self.values, self.roles) if r == "user"]
        return users[-1] if users else ""


def _input_texts(route: str, body: dict) -> _Texts:
    """Validate the request's text fields and collect the ones the input checks see.

    Chat: user and tool messages (the untrusted parts; the system prompt is the operator's and assistant
    turns were checked on the way out). Completions: the prompt.
    """
    texts = _Texts()
    if route == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("`messages` must be a non-empty list of {role, content} objects", "invalid_messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a `role`", "invalid_messages")
            role, content = message["role"], message.get("content")
            if role not in ("user", "tool"):
                continue
            if isinstance(content, str):
                texts.add(content, role, lambda new, m=message: m.__setitem__("content", new))
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                        texts.add(part["text"], role, lambda new, p=part: p.__setitem__("text", new))
            elif content is not None:
                raise bad_request(f"messages[{i}].content must be a string or a list of parts", "invalid_messages")
        return texts
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.add(prompt, "user", lambda new: body.__setitem__("prompt", new))
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        for i, item in enumerate(prompt):
            texts.add(item, "user", lambda new, i=i: prompt.__setitem__(i, new))
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        texts.opaque = True  # token ids
    else:
        raise bad_request("`prompt` must be a string or a list of strings", "invalid_prompt")
    return texts
