"""The one HTTP client to the engine: proxying, health and readiness, over one aiohttp connection pool.

The gateway proxies through it, `serve` waits for a starting engine and checks an `--upstream` through it,
and the supervisor polls it. aiohttp rather than httpx: its C parser costs a fraction of httpx's per
request and per chunk, which is most of what the gateway adds to each token (benchmarks/gateway_overhead.py).
Transport failures come out as `UpstreamTimeout` or `UpstreamUnreachable`, so nothing above this module
knows the client library.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, NamedTuple, Protocol


class UpstreamError(Exception):
    """The engine could not be reached or stopped answering."""


class UpstreamTimeout(UpstreamError):
    """The engine stayed silent longer than the request timeout (before answering, or between chunks)."""


class UpstreamUnreachable(UpstreamError):
    """The connection failed or broke off."""


@dataclass
class EngineState:
    """Whether requests can go to the engine now; the supervisor and the gateway keep it current."""

    base_url: str
    supervised: bool  # an engine llmprod started (and restarts), not an --upstream
    up: bool = True
    reason: str = ""

    def mark_down(self, reason: str) -> None:
        self.up, self.reason = False, reason

    def mark_up(self) -> None:
        self.up, self.reason = True, ""


@dataclass(frozen=True)
class Answer:
    """A whole (non-streamed) answer of the engine."""

    status: int
    content: bytes
    content_type: str


class Health(NamedTuple):
    ok: bool
    reason: str = ""


class Stream(Protocol):
    """A streamed answer, read as it arrives."""

    status: int

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    def finished(self) -> bool:
        """Read to its end (the connection can be reused)."""

    def release(self) -> None:
        """Give the connection back to the pool (after reading to the end)."""

    def close(self) -> None:
        """Drop the connection: a streaming engine sees it and aborts the generation."""


class Upstream(Protocol):
    base_url: str

    async def call(self, method: str, path: str, payload: dict | None = None, headers: dict | None = None,
                   timeout: float | None = None) -> Answer: ...

    async def stream(self, path: str, payload: dict) -> Stream: ...

    async def health(self, timeout: float = 5.0) -> Health: ...

    async def close(self) -> None: ...


class AiohttpStream:
    def __init__(self, response) -> None:
        self._response = response
        self.status = response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(type(exc).__name__) from None

    async def read(self) -> bytes:
        return await self._response.read()

    def finished(self) -> bool:
        return self._response.content.at_eof()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


class AiohttpUpstream:
    """One connection pool to `base_url`, opened on first use in the running event loop."""

    def __init__(self, base_url: str, request_timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self._session: Any = None

    def _client(self):
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=75, enable_cleanup_closed=True)
            # sock_read: the engine may stay silent at most this long (before the first byte or between
            # chunks) before the request is answered with 504.
            timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=self.request_timeout)
            # No cookie jar: the session serves every caller, and a jar would hand one caller's cookies
            # (set by the engine or a proxy in front of it) to the next.
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def call(self, method: str, path: str, payload: dict | None = None, headers: dict | None = None,
                   timeout: float | None = None) -> Answer:
        import aiohttp

        # The session's timeout (--request-timeout between reads) unless the caller bounds the whole call.
        extra = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        try:
            async with self._client().request(method, f"{self.base_url}{path}", json=payload, headers=headers,
                                              **extra) as response:
                return Answer(response.status, await response.read(),
                              response.headers.get("content-type", "application/json"))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(type(exc).__name__) from None

    async def stream(self, path: str, payload: dict) -> AiohttpStream:
        import aiohttp

        try:
            return AiohttpStream(await self._client().post(f"{self.base_url}{path}", json=payload))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(type(exc).__name__) from None

    async def health(self, timeout: float = 5.0) -> Health:
        """GET /health: what `serve` waits for, what the supervisor polls and `/health` reports."""
        try:
            answer = await self.call("GET", "/health", timeout=timeout)
        except UpstreamError as exc:
            return Health(False, f"{exc} reaching {self.base_url}")
        if answer.status != 200:
            return Health(False, f"/health answered HTTP {answer.status}")
        return Health(True)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
