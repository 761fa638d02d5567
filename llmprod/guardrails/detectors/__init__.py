"""Deterministic detectors: PII, secrets, prompt injection, deny-lists and custom regexes, all on RE2.

    engine.py      Pattern (with how it behaves in a stream), Detector, the RE2 set pass
    validators.py  checksums, ranges and entropy: what a regex cannot say
    pii.py, secrets.py, injection.py   the patterns; the selectors below pick them for a check's options
"""

from __future__ import annotations

from typing import Sequence

from llmprod.guardrails.detectors.engine import (
    Detector,
    Match,
    Pattern,
    Prefilter,
    compile_re2,
    re2_set,
    set_regex,
)
from llmprod.guardrails.detectors.injection import INJECTION_CATEGORIES, INJECTION_PATTERNS
from llmprod.guardrails.detectors.pii import PII_ENTITIES, PII_PATTERNS
from llmprod.guardrails.detectors.secrets import SECRET_PATTERNS
from llmprod.guardrails.detectors.validators import (
    bare_secret_ok,
    digits_of,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    luhn_ok,
    phone_ok,
    quoted_secret_ok,
    shannon_entropy,
    ssn_ok,
)

__all__ = ["Detector", "INJECTION_CATEGORIES", "INJECTION_PATTERNS", "Match", "PII_ENTITIES", "PII_PATTERNS",
           "Pattern", "Prefilter", "SECRET_PATTERNS", "bare_secret_ok", "compile_re2", "denylist_pattern",
           "digits_of", "iban_ok", "injection_patterns", "ipv4_ok", "ipv6_ok", "luhn_ok", "phone_ok", "pii_patterns",
           "quoted_secret_ok", "re2_set", "secret_patterns", "set_regex", "shannon_entropy", "ssn_ok"]


def pii_patterns(entities: Sequence[str]) -> list[Pattern]:
    # Most specific first: a phone-shaped run inside an IBAN, an SSN or an IP address is not a phone number.
    order = ["email", "iban", "card", "ssn", "ip", "phone"]
    return [PII_PATTERNS[name] for entity in sorted(entities, key=order.index) for name in PII_ENTITIES[entity]]


def secret_patterns(kinds: Sequence[str]) -> list[Pattern]:
    return [p for kind in kinds for p in SECRET_PATTERNS[kind]]


def injection_patterns(categories: Sequence[str]) -> list[Pattern]:
    return [p for p in INJECTION_PATTERNS.values() if p.category in categories]


def denylist_pattern(words: Sequence[str], case_sensitive: bool) -> Pattern:
    import re2

    alternation = "|".join(re2.escape(w) for w in sorted(words, key=len, reverse=True))
    return Pattern("denylist", rf"(?:^|[^A-Za-z0-9_])({alternation})(?:$|[^A-Za-z0-9_])", group=1,
                   case_insensitive=not case_sensitive, stream="window",
                   max_len=max(len(w) for w in words) + 2)
