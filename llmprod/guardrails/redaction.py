"""Typed placeholders for redacted spans ([EMAIL], [CARD], [AWS_ACCESS_KEY_ID], ...)."""

from __future__ import annotations

from typing import Any, Sequence

from llmprod.guardrails.types import Finding

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ssn": "[SSN]", "iban": "[IBAN]",
                "ipv4": "[IP]", "ipv6": "[IP]"}


def placeholder(category: str) -> str:
    return PLACEHOLDERS.get(category, f"[{category.upper()}]")


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace the spans of redact findings with typed placeholders; overlapping spans merge."""
    spans = sorted((f.start, f.end, f.category) for f in findings if f.action == "redact" and f.end > f.start)
    if not spans:
        return text
    merged: list[list[Any]] = []
    for start, end, category in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, category])
    out, cursor = [], 0
    for start, end, category in merged:
        out.append(text[cursor:start])
        out.append(placeholder(category))
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
