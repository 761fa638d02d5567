"""API keys per client, with requests- and tokens-per-minute limits (`--api-keys FILE`), reloaded on SIGHUP.

The file is either one key per line (`#` comments and blank lines skipped; the keys are named key-1,
key-2, ... in order), or YAML:

    keys:
      - name: team-a              # what the metrics and the logs show; the key itself never is
        key: sk-team-a-...        # or  sha256: <64 hex digits of SHA-256(key)>  (the file then holds no secret)
        requests_per_minute: 60   # optional
        tokens_per_minute: 100000 # optional: prompt + completion tokens, from the answers' usage

A presented key is hashed once with SHA-256 and looked up among the digests. Limits are token buckets that
hold a minute's worth and refill continuously: requests are taken when a request is admitted; tokens are
charged when the answer's usage is known, and a client in debt is refused until the bucket refills. A
refusal is a 429 in OpenAI's shape with Retry-After (whole seconds until the bucket allows one more).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmprod.errors import ConfigError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class ClientKey:
    name: str
    digest: bytes  # SHA-256 of the key
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def single_key(key: str) -> list[ClientKey]:
    """`--api-key K`: one client, named "default", no limits."""
    return [ClientKey("default", digest(key))]


def load_keys(path: Path) -> list[ClientKey]:
    """Read and check the whole file; anything wrong is one ConfigError that names the entry."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --api-keys {path}: {exc.__class__.__name__}",
                          hint="give a readable text or YAML file of keys") from exc
    data: Any = None
    if path.suffix.lower() in (".yaml", ".yml") or text.lstrip().startswith("keys:"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"--api-keys {path} is not valid YAML{where}",
                              hint="see `llmprod serve --help` for the format") from exc
    keys = _from_yaml(data, path) if data is not None else _from_lines(text, path)
    if not keys:
        raise ConfigError(f"--api-keys {path} holds no key", hint="one key per line, or a YAML `keys:` list")
    names, digests = set(), set()
    for k in keys:
        if k.name in names:
            raise ConfigError(f"--api-keys {path}: the name {k.name!r} is used twice", hint="give each client its own name")
        if k.digest in digests:
            raise ConfigError(f"--api-keys {path}: {k.name!r} repeats another entry's key",
                              hint="give each client its own key")
        names.add(k.name)
        digests.add(k.digest)
    return keys


def _from_lines(text: str, path: Path) -> list[ClientKey]:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if any(c.isspace() for c in line):
            raise ConfigError(f"--api-keys {path} line {number}: a key has no spaces",
                              hint="one key per line; for names and limits use the YAML form")
        keys.append(ClientKey(f"key-{len(keys) + 1}", digest(line)))
    return keys


def _from_yaml(data: Any, path: Path) -> list[ClientKey]:
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"--api-keys {path}: expected a top-level `keys:` list", hint="see `llmprod serve --help`")
    keys = []
    for i, entry in enumerate(entries, 1):
        where = f"--api-keys {path} entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not a mapping", hint="each entry has name, key (or sha256) and limits")
        unknown = set(entry) - {"name", "key", "sha256", "requests_per_minute", "tokens_per_minute"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}",
                              hint="fields: name, key or sha256, requests_per_minute, tokens_per_minute")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name {name!r} is not 1-64 letters, digits or _.:-",
                              hint="the name labels metrics; keep it short and plain")
        key, hashed = entry.get("key"), entry.get("sha256")
        if (key is None) == (hashed is None):
            raise ConfigError(f"{where} ({name}): give exactly one of key and sha256", hint="sha256 keeps the secret out of the file")
        if key is not None:
            if not isinstance(key, str) or not key or any(c.isspace() for c in key):
                raise ConfigError(f"{where} ({name}): the key must be a non-empty string without spaces")
            value = digest(key)
        else:
            if not isinstance(hashed, str) or not _HEX64.match(hashed):
                raise ConfigError(f"{where} ({name}): sha256 must be 64 hex digits",
                                  hint="e.g. printf %s \"$KEY\" | sha256sum")
            value = bytes.fromhex(hashed)
        limits = {}
        for field_name in ("requests_per_minute", "tokens_per_minute"):
            limit = entry.get(field_name)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0
                                      or math.isinf(limit)):
                raise ConfigError(f"{where} ({name}): {field_name} must be a positive number")
            limits[field_name] = float(limit) if limit is not None else None
        keys.append(ClientKey(name, value, **limits))
    return keys


@dataclass
class Bucket:
    """Holds up to `per_minute`, refills at per_minute / 60 a second; may go into debt (tokens charged late)."""

    per_minute: float
    level: float = field(default=0.0)
    stamp: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def refill(self, now: float) -> None:
        if self.stamp:
            self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        return max(0.0, (amount - self.level) * 60.0 / self.per_minute)


@dataclass
class Limiter:
    requests: Bucket | None
    tokens: Bucket | None

    def admit(self, now: float) -> tuple[str, float] | None:
        """Take one request, or (which limit, seconds to wait) when refused."""
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)
        if self.tokens is not None and self.tokens.level < 1:
            return "tokens_per_minute", self.tokens.wait_for(1)
        if self.requests is not None:
            if self.requests.level < 1:
                return "requests_per_minute", self.requests.wait_for(1)
            self.requests.level -= 1
        return None

    def charge(self, tokens: int, now: float) -> None:
        if self.tokens is not None and tokens > 0:
            self.tokens.refill(now)
            self.tokens.level -= tokens


# The client of the request being answered: set by the auth layer, read where usage is counted.
CURRENT: ContextVar[tuple["KeyRing", str] | None] = ContextVar("llmprod_client", default=None)


class KeyRing:
    """The keys in force and each client's limiter; `replace` swaps the keys (SIGHUP) and keeps the buckets
    of the clients that stay, so a reload neither drops streams nor resets anyone's limits."""

    def __init__(self, keys: list[ClientKey], clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (keys by digest, limiters by name), swapped as one: a reload (a signal handler, on the event loop's
        # thread) never leaves a key beside another generation's limiter.
        self._state: tuple[dict[bytes, ClientKey], dict[str, Limiter]] = ({}, {})
        self.replace(keys)

    def replace(self, keys: list[ClientKey]) -> None:
        current = self._state[1]
        limiters = {}
        for k in keys:
            old = current.get(k.name)
            same = old is not None and _per_minute(old.requests) == k.requests_per_minute \
                and _per_minute(old.tokens) == k.tokens_per_minute
            limiters[k.name] = old if same else Limiter(
                Bucket(k.requests_per_minute) if k.requests_per_minute else None,
                Bucket(k.tokens_per_minute) if k.tokens_per_minute else None)
        self._state = ({k.digest: k for k in keys}, limiters)

    @property
    def names(self) -> list[str]:
        return [k.name for k in self._state[0].values()]

    @property
    def limited(self) -> bool:
        """Whether any client has a per-minute limit."""
        return any(k.requests_per_minute or k.tokens_per_minute for k in self._state[0].values())

    def identify(self, token: bytes) -> ClientKey | None:
        presented = digest(token)
        found = self._state[0].get(presented)
        if found is not None and hmac.compare_digest(found.digest, presented):
            return found
        return None

    def admit(self, name: str) -> tuple[str, float] | None:
        limiter = self._state[1].get(name)
        return None if limiter is None else limiter.admit(self.clock())

    def charge(self, name: str, tokens: int) -> None:
        limiter = self._state[1].get(name)
        if limiter is not None:
            limiter.charge(tokens, self.clock())


def _per_minute(bucket: Bucket | None) -> float | None:
    return None if bucket is None else bucket.per_minute


def charge_current(prompt: int | None, completion: int | None) -> str | None:
    """Charge the tokens of the answer being counted to its client; its name (for the metrics), if any."""
    current = CURRENT.get()
    if current is None:
        return None
    ring, name = current
    ring.charge(name, (prompt or 0) + (completion or 0))
    return name
