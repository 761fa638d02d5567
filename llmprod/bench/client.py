"""Streaming requests to an OpenAI-compatible server, timed chunk by chunk."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from llmprod.bench.prompts import Prompt
from llmprod.bench.stats import RequestResult
from llmprod.errors import InputError


@dataclass(frozen=True)
class Target:
    base_url: str  # ends in /v1
    model: str
    endpoint: str  # "chat" or "completions"
    api_key: str | None = None
    max_tokens: int = 128
    ignore_eos: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def path(self) -> str:
        return f"{self.base_url}/chat/completions" if self.endpoint == "chat" else f"{self.base_url}/completions"

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "stream": True, "max_tokens": self.max_tokens,
                                "stream_options": {"include_usage": True}, "temperature": 0.0}
        if self.endpoint == "chat":
            body["messages"] = prompt.chat_messages()
        else:
            body["prompt"] = prompt.completion_text()
        if self.ignore_eos:
            body["ignore_eos"] = True  # vLLM's extension: always generate max_tokens
        return body


def normalize_base_url(url: str) -> str:
    """The server's /v1 base, however the user wrote its URL."""
    from llmprod.urls import server_root

    return server_root(url, "URL") + "/v1"


async def preflight(client, target: Target) -> list[str]:
    """GET /v1/models before any load: unreachable, wrong key, or not OpenAI-compatible → exit 2."""
    import aiohttp

    url = f"{target.base_url}/models"
    try:
        async with client.get(url, headers=target.headers, timeout=aiohttp.ClientTimeout(total=10.0)) as response:
            status, body = response.status, await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise InputError(f"cannot reach {url}: {type(exc).__name__}",
                         hint="is the server running, and is the URL right?") from exc
    if status in (401, 403):
        raise InputError(f"{url} refused the API key (HTTP {status})",
                         hint="pass the right --api-key (or none if the server has no auth)")
    try:
        data = json.loads(body)
        models = [m["id"] for m in data["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{url} did not answer like an OpenAI-compatible server (HTTP {status})",
                         hint="give the base URL of a server with /v1/models and /v1/chat/completions") from exc
    return models


async def stream_one(client, target: Target, prompt: Prompt) -> RequestResult:
    """One streamed request, each text chunk timed as soon as its line is read (aiohttp's C parser keeps the
    client's cost per chunk small, so many simultaneous streams are not timed late)."""
    import aiohttp

    start = time.perf_counter()
    result = RequestResult(ok=False, start=start, end=start)
    try:
        async with client.post(target.path, json=target.payload(prompt), headers=target.headers) as response:
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")
                result.error = f"HTTP {response.status}: {_error_message(body)}"
                result.end = time.perf_counter()
                return result
            chunks = 0
            async for raw in response.content:
                if not raw.startswith(b"data:"):
                    continue
                now = time.perf_counter()
                data = raw[5:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if _has_text(event, target.endpoint):
                    if result.first_token is None:
                        result.first_token = now
                    result.token_times.append(now)
                    chunks += 1
                usage = event.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    result.output_tokens = int(usage["completion_tokens"])
                    result.prompt_tokens = usage.get("prompt_tokens")
                    result.usage_reported = True
            if not result.usage_reported:
                result.output_tokens = chunks  # servers that send no usage: one token per text chunk
            result.ok = result.first_token is not None
            if not result.ok:
                result.error = "the stream carried no text"
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    result.end = time.perf_counter()
    return result


def _has_text(event: dict[str, Any], endpoint: str) -> bool:
    for choice in event.get("choices") or []:
        if endpoint == "chat":
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
                return True
        elif choice.get("text"):
            return True
    return False


def _error_message(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return body[:200]
