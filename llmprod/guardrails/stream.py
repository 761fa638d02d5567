"""Incremental output scanning with a hold-back window.

Generated text arrives a few characters at a time. The scanner keeps only the *pending* text (received,
not yet sent) and releases a prefix of it once no match can still grow into that prefix:

- "token" patterns (e-mails, card numbers, keys) consist of non-blank characters, digit groups split by
  single spaces at most, so a match still growing lies inside the trailing run of such characters;
- "keyword" patterns start at a trigger word ("secret", "-----BEGIN") and are at most `max_len` long, so
  the text from the last trigger within `max_len` of the end is held;
- "window" patterns (phrases, custom regexes) can be anything up to `max_len` long: the last
  `max_len - 1` characters are held.

A match found inside the releasable prefix is redacted there; a match that straddles the boundary moves
the boundary back to its start. Each feed scans only the pending text, whose length is bounded by the
hold-back window plus the new text, so the total work is linear in the output length.

Model checks (Llama Guard) run on the whole output every `every_tokens` completion tokens and at the end;
the text between two such checks is not held for them (that would add their latency to every token), so a
block from a model check ends the stream at the point where it was detected.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import NamedTuple

from llmprod.guardrails.redaction import redact
from llmprod.guardrails.types import StreamStep

MAX_TOKEN_RUN = 512  # a single non-blank run longer than this is released (no pattern of ours is longer)
LEFT_CONTEXT = 64  # released characters kept as context, so "api_key" sent earlier still anchors " = '...'"
EVERY_TOKENS = 64  # a model check without its own `every_tokens`


def _tail_run_start(text: str, limit: int) -> int:
    """Start of the trailing run of non-blank characters (digit groups may be split by one space)."""
    i = len(text)
    lower = max(0, len(text) - limit)
    while i > lower:
        ch = text[i - 1]
        if not ch.isspace():
            i -= 1
            continue
        # "4111 1111" / "+1 (415) 555" / "GB82 WEST": one space between two parts of a group, or a space
        # at the very end after a digit (the next chunk may carry the next group).
        before = text[i - 2] if i >= 2 else ""
        after = text[i] if i < len(text) else ""
        if ch == " " and (before.isalnum() or before == ")") and before != " " and (
                (after and (after.isalnum() or after == "(") and (before.isdigit() or after.isdigit()))
                or (not after and before.isdigit())):
            i -= 1
            continue
        break
    return i


class Look(NamedTuple):
    """What one pass over a text found anywhere in it."""

    candidates: set[int]  # id() of the patterns that may match (as the prefilter says)
    triggers: list[int]  # indices into HoldBack.keywords of the keyword patterns whose trigger occurs
    hint: bool  # some token pattern's hint occurs (always True for non-ASCII text: `re` decides there)


class HoldBack:
    """Where the pending text must be held back, for one set of patterns. Built once per policy: `look`
    and `start` run on every chunk of every stream, so what they need per pattern kind is prepared here."""

    def __init__(self, patterns) -> None:
        from llmprod.guardrails.detectors import re2_set, set_regex

        patterns = list(patterns)
        self.tokens = [(min(p.max_len, MAX_TOKEN_RUN), re.compile(p.hint) if p.hint else None, p.hint_tail)
                       for p in patterns if p.stream == "token"]
        self.token_reach = max((limit for limit, _, _ in self.tokens), default=0)
        # For a trailing run no longer than every token pattern (a word, mostly), one search decides for all.
        self.shortest_token = min((limit for limit, _, _ in self.tokens), default=0)
        self.unhinted = any(hint is None for _, hint, _ in self.tokens)
        hints = sorted({hint.pattern for _, hint, _ in self.tokens if hint is not None})
        self.any_hint = re.compile("|".join(f"(?:{h})" for h in hints)) if hints else None
        self.hint_tail = max((tail for _, hint, tail in self.tokens if hint is not None), default=0)
        self.window = max((p.max_len for p in patterns if p.stream == "window"), default=0)
        self.keywords = [p for p in patterns if p.stream == "keyword"]
        # One RE2 pass answers all three questions of `Look`: the patterns themselves (the prefilter's
        # set), then the keyword triggers, then the hints. One call instead of three per chunk.
        self._ids = [id(p) for p in patterns]
        regexes = [set_regex(p) for p in patterns] + [f"(?i){p.trigger}" for p in self.keywords]
        self._hint_index = len(regexes) if self.any_hint is not None else -1
        if self.any_hint is not None:
            regexes.append(self.any_hint.pattern)
        self._presence = re2_set(regexes) if regexes else None

    def look(self, text: str) -> Look:
        hits = (self._presence.Match(text) or ()) if self._presence is not None else ()
        # RE2's \d is ASCII, re's is not: for other text the hint searches run as they are.
        candidates, triggers, hint = set(), [], not text.isascii()
        first_trigger = len(self._ids)
        for i in hits:
            if i < first_trigger:
                candidates.add(self._ids[i])
            elif i == self._hint_index:
                hint = True
            else:
                triggers.append(i - first_trigger)
        return Look(candidates, triggers, hint)

    def start(self, text: str, floor: int, look: Look | None = None) -> int:
        """Index in `text` (left context + pending) from which characters must be held; at least `floor`."""
        if look is None:
            look = self.look(text)
        end = hold = len(text)
        if self.tokens:
            # The trailing run, walked once; a pattern of max length L holds at most its last L characters.
            run = _tail_run_start(text, self.token_reach)
            if run == end:
                pass  # the text ends in a break: no match can still grow
            elif end - run <= self.shortest_token and (
                    self.unhinted or (look.hint and self.any_hint.search(text, run))):
                hold = run  # the whole run, for some pattern
            elif end - run <= self.shortest_token:
                hold = max(run, end - self.hint_tail)  # no hint in the run: the longest hint tail
            else:
                for limit, hint, hint_tail in self.tokens:
                    start = max(run, end - limit)
                    if hint is not None and (not look.hint or hint.search(text, start) is None):
                        # Nothing in the run can start a match yet: only its last characters might.
                        start = max(start, end - hint_tail)
                    hold = min(hold, start)
        if self.window:
            hold = min(hold, end - self.window + 1)
        # Keyword patterns hold from their last trigger within their reach.
        for pattern in (self.keywords[i] for i in look.triggers):
            last = None
            for m in pattern.compiled_trigger().finditer(text, max(0, end - pattern.max_len)):
                last = m.start()
            if last is not None:
                hold = min(hold, last)
        return max(hold, floor)


class OutputScanner:
    def __init__(self, guard, context: str, holdback: HoldBack) -> None:
        self.guard = guard
        self.context = context
        self.checks = guard.deterministic("output")
        self.model_checks = guard.model_checks("output")
        self.every_tokens = min((getattr(c, "every_tokens", EVERY_TOKENS) for c in self.model_checks), default=0)
        self.holdback = holdback
        self.pending = ""
        self.left = ""  # the last LEFT_CONTEXT released characters (as generated)
        self.received_parts: list[str] = []
        self.tokens = 0
        self.tokens_at_last_model_check = 0
        self.blocked = False
        self.finished = False
        self.timings: dict[str, float] = {}  # seconds per check over the whole stream, reported by close()

    async def feed(self, text: str, tokens: int = 1) -> StreamStep:
        """`text` generated next, `tokens` completion tokens of it (the engine's events it came in)."""
        if self.blocked:
            return StreamStep("", blocked=True)
        held = bool(self.pending)
        self.pending += text
        self.received_parts.append(text)
        self.tokens += tokens
        step = self._release(final=False)
        step.verbatim = not (held or step.blocked) and step.text == text
        if step.blocked or not self.model_checks:
            return step
        if self.tokens - self.tokens_at_last_model_check >= self.every_tokens:
            self.tokens_at_last_model_check = self.tokens
            blocked = await self._model_block()
            if blocked:
                return StreamStep("", blocked=True, categories=blocked)
        return step

    async def finish(self) -> StreamStep:
        """Release everything held, after the final checks; later calls (a [DONE] after the finish chunk)
        return nothing."""
        if self.blocked:
            return StreamStep("", blocked=True)
        if self.finished:
            return StreamStep("")
        self.finished = True
        step = self._release(final=True)
        if step.blocked or not self.model_checks:
            return step
        blocked = await self._model_block()
        if blocked:
            return StreamStep("", blocked=True, categories=blocked)
        return step

    def _release(self, final: bool) -> StreamStep:
        ctx = len(self.left)
        text = self.left + self.pending
        started = time.perf_counter()
        look = self.holdback.look(text)
        self.timings["prefilter"] = self.timings.get("prefilter", 0.0) + time.perf_counter() - started
        # Normalisation leaves ASCII text as it is, so the look's candidates are the prefilter's answer.
        findings = self.guard.scan_with(text, "output", self.checks, self.timings,
                                        candidates=look.candidates if text.isascii() else None)
        boundary = len(text) if final else self.holdback.start(text, ctx, look)
        if not findings:  # the usual case
            self.left = text[max(0, boundary - LEFT_CONTEXT):boundary]
            self.pending = text[boundary:]
            return StreamStep(text[ctx:boundary])
        # Findings over the left context plus the pending text; those wholly in the context were dealt
        # with before, those reaching into the pending text are clipped to it.
        findings = [f if f.start >= ctx else replace(f, start=ctx) for f in findings if f.end > ctx]
        block = [f for f in findings if f.action == "block"]
        if block:
            self.blocked = True
            safe_end = min(f.start for f in block)
            emit = self._redacted(text[ctx:safe_end], [f for f in findings if f.end <= safe_end], ctx)
            self.pending = ""
            self._count(findings)
            return StreamStep(emit, blocked=True, categories=tuple(sorted({f.category for f in block})))
        for f in sorted(findings, key=lambda f: f.start):
            if f.start < boundary < f.end:
                boundary = f.start
        released = [f for f in findings if f.end <= boundary]
        emit = self._redacted(text[ctx:boundary], released, ctx)
        self._count(released)
        self.left = text[:boundary][-LEFT_CONTEXT:]
        self.pending = text[boundary:]
        return StreamStep(emit)

    def close(self) -> None:
        """The stream ended, whatever the reason: its checks' time is reported once, as one request's."""
        timings, self.timings = self.timings, {}
        self.guard.report("output", (), timings)

    def _redacted(self, text: str, findings, offset: int) -> str:
        if not findings:
            return text
        return redact(text, [replace(f, start=f.start - offset, end=f.end - offset) for f in findings])

    def _count(self, findings) -> None:
        for f in findings:
            self.guard.observer.finding("output", f)

    async def _model_block(self) -> tuple[str, ...]:
        """The model checks on everything received so far; the categories that block, if any. A check that
        fails raises CheckUnavailable: the relay ends the stream with an error rather than pass it."""
        text = "".join(self.received_parts)
        findings = await self.guard.run_models("output", [text], self.context, self.timings)
        self._count(findings)
        block = [f for f in findings if f.action == "block"]
        if block:
            self.blocked = True
            return tuple(sorted({f.category for f in block}))
        return ()
