"""The base URL of an OpenAI-compatible server, however a user writes it (with or without /v1, a slash)."""

from __future__ import annotations

from llmprod.errors import InputError


def server_root(url: str, what: str) -> str:
    """`http://host:8000/v1/` → `http://host:8000`; anything but an http(s) URL is an InputError naming `what`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{what} {url!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000 or http://host:8000/v1")
    return url.removesuffix("/v1")
