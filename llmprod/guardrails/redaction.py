"""Typed placeholders for redacted spans ([EMAIL], [CARD], [AWS_ACCESS_KEY_ID], ...)."""

from __future__ import annotations

from typing import Any, Sequence

from llmprod.guardrails.types import Finding

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ssn": "[SSN]", "iban": "[IBAN]",
                "ipv4": "[IP]", "ipv6": "[IP]"}


def placeholder(category: str) -> str:
    return PLACEHOLDERS.get(category, f"[{category.upper()}]")


def merged_spans(findings: Sequence[Finding]) -> list[list[Any]]:
    """The [start, end, category] spans that redact findings replace, overlapping ones merged, in order."""
    spans = sorted((f.start, f.end, f.category) for f in findings if f.action == "redact" and f.end > f.start)
    merged: list[list[Any]] = []
    for start, end, category in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, category])
    return merged


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace the spans of redact findings with typed placeholders; overlapping spans merge."""
    merged = merged_spans(findings)
    if not merged:
        return text
    out, cursor = [], 0
    for start, end, category in merged:
        out.append(text[cursor:start])
        out.append(placeholder(category))
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def redacted_chars(text: str, findings: Sequence[Finding]) -> list[str]:
    """`redact` character by character: what each character of `text` becomes (itself, a span's placeholder
    at the span's first character, "" for the rest of a span). For text that is mirrored in pieces elsewhere
    (logprob tokens), so each piece can be redacted as the whole was."""
    out = list(text)
    for start, end, category in merged_spans(findings):
        out[start] = placeholder(category)
        for i in range(start + 1, end):
            out[i] = ""
    return out
