"""Every answer the gateway gives of its own is an error in OpenAI's shape:
`{"error": {"message", "type", "code", "param"}}`, with `Retry-After` where waiting helps."""

from __future__ import annotations

import json
import logging
import traceback

from llmprod.guardrails.types import CheckUnavailable
from llmprod.serve.upstream import EngineState, UpstreamError, UpstreamTimeout

log = logging.getLogger("llmprod.gateway")


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


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(500, f"internal error in the gateway (request id {request_id}); the details are in its log",
                        "server_error", "internal_error")


def guard_unavailable(exc: CheckUnavailable) -> GatewayError:
    """A check that could not answer: the request fails closed, never passes unchecked."""
    log.warning("guardrail %s on the %s failed (%s); the request was refused", exc.check, exc.stage,
                type(exc.cause).__name__)
    return GatewayError(503, f"the {exc.check} guardrail could not check the {exc.stage} ({type(exc.cause).__name__})"
                        "; the request was refused rather than passed unchecked", "service_unavailable",
                        "guardrail_unavailable", {"Retry-After": "5"})


def upstream_failed(exc: UpstreamError, state: EngineState, request_timeout: float) -> GatewayError:
    """504 when the engine stayed silent; 503 when it could not be reached (a supervised one is then marked
    down until its health says otherwise)."""
    if isinstance(exc, UpstreamTimeout):
        return GatewayError(504, f"the engine did not answer within --request-timeout ({request_timeout:g} s)",
                            "timeout", "upstream_timeout")
    if state.supervised:
        state.mark_down("the engine stopped answering")
    return unavailable(f"the engine is not reachable ({exc})")


# vLLM's answer (HTTP 500, EngineDeadError) to the requests in flight when its engine core dies; its API
# server exits next and the supervisor restarts both. To a client that is an engine that is unavailable.
ENGINE_DEAD = "EngineCore encountered an issue"


def from_engine(status: int, content: bytes, state: EngineState | None = None) -> GatewayError:
    """The engine's own error answer in OpenAI's shape, whatever shape it came in; 503 when it says it died."""
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
    if status >= 500 and ENGINE_DEAD in str(message):
        if state is not None and state.supervised:
            state.mark_down("the engine's core died")
        return unavailable(f"the engine failed while answering and is being restarted ({message})")
    if 400 <= status < 500 and type_ == "upstream_error":
        type_ = "invalid_request_error"
    if status >= 500 and status not in (503, 504):
        # The engine failed, not the gateway: 502 (its message kept), so a 500 always means the gateway itself.
        return GatewayError(502, f"the engine failed: {message}", str(type_), str(code))
    return GatewayError(status, str(message), str(type_), str(code))


def log_exception(request_id: str, method: str, path: str, exc: BaseException) -> None:
    """An unexpected exception, logged by request id with its type and where it was raised: never its message
    or locals, which may hold what the client sent."""
    frames = traceback.extract_tb(exc.__traceback__)[-8:]
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))
    log.error("request %s: %s %s raised %s at %s", request_id, method, path, type(exc).__name__, where or "?")
