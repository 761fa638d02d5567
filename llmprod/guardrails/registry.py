"""Every check type a policy can name. Adding one: a module under `checks/` with a `CheckType`, and a line here."""

from __future__ import annotations

from llmprod.guardrails.checks import llama_guard, patterns, prompt_guard
from llmprod.guardrails.checks.base import CheckType

CHECK_TYPES: dict[str, CheckType] = {t.name: t for t in (
    *patterns.TYPES,
    llama_guard.TYPE,
    prompt_guard.TYPE,
)}
