"""Incremental output scanning with a hold-back bounded by what a pattern can still complete.

Generated text arrives a few characters at a time. The scanner keeps only the *pending* text (received,
not yet sent) and releases a prefix of it as soon as no match of any pattern can still grow into that
prefix. Each pattern says how far back a match still growing at the end can start:

- "token" patterns (e-mails, card numbers, keys) are made of the characters in their `chars` alphabet,
  so a match still growing lies in the trailing stretch of those characters, within the pattern's longest
  match. Until a pattern's `hint` occurs there (an "@", a digit, "ghp_"), only its last `hint_tail`
  characters can be the start of one (an e-mail's local part is at most 64 characters). Once it does, the
  regex itself decides: a partial match (the `regex` module's partial matching, ASCII semantics like RE2's)
  that reaches the end of the text holds from its start; none, and the stretch is released.
- "keyword" patterns start at a trigger ("password:", "-----BEGIN"): from each trigger within reach, the
  same partial match says whether a match is still possible ("token: each request" is not: a secret's
  value has no blank in it). `open_ended` patterns hold from their trigger for their whole reach.
- "window" patterns (phrases, custom regexes) can be anything up to `max_len` long: the last
  `max_len - 1` characters are held.

So prose holds back about the word being written, code and JSON the identifier or number being written,
and a long run without a hint is released as it comes. A match found inside the releasable prefix is
redacted there; a match that straddles the boundary moves the boundary back to its start. Each feed looks
at the left context, the pending text and the new text only: bounded by the patterns' reach, whatever
the length of the output or of a run.

Model checks (Llama Guard) run on the whole output every `every_tokens` completion tokens and at the end;
the text between two such checks is not held for them (that would add their latency to every token), so a
block from a model check ends the stream at the point where it was detected.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import NamedTuple, Sequence

from llmprod.guardrails.normalize import normalize
from llmprod.guardrails.redaction import redact
from llmprod.guardrails.types import StreamStep

MAX_TOKEN_RUN = 512  # a token pattern's reach is capped here (a JWT may be longer: its head goes out first)
LEFT_CONTEXT = 64  # released characters kept as context, so "api_key" sent earlier still anchors " = '...'"
EVERY_TOKENS = 64  # a model check without its own `every_tokens`
PARTIAL_TIMEOUT = 0.002  # seconds a partial match may take; past it, the pattern counts as still growing


class Look(NamedTuple):
    """What one RE2 pass over a text found anywhere in it."""

    candidates: set[int]  # id() of the patterns that may match somewhere in it (their hint or trigger occurs)
    triggers: list[int]  # indices into HoldBack.keywords of the keyword patterns whose trigger occurs
    hints: set[int]  # indices into HoldBack.tokens of the token patterns whose hint occurs


class Growing:
    """A token or keyword pattern, ready for "where could a match still growing at the end start?"."""

    def __init__(self, pattern) -> None:
        import regex

        self.pattern = pattern
        self.open_ended = pattern.stream == "keyword" and pattern.open_ended
        self.reach = min(pattern.max_len, MAX_TOKEN_RUN) if pattern.stream == "token" else pattern.max_len
        self.chars = pattern.chars
        self.lead = pattern.chars if pattern.lead is None else pattern.lead
        self.hint = re.compile(pattern.hint, re.ASCII) if pattern.hint else None
        self.hint_tail = pattern.hint_tail
        self.unhinted_reach = min(self.hint_tail, self.reach)  # how far back a match without its hint starts
        body = pattern.regex.removeprefix("(?i)")
        flags = regex.ASCII | regex.V0 | (regex.IGNORECASE if pattern.case_insensitive or body != pattern.regex
                                          else 0)
        # A match that reaches the end, complete or cut short by it: either can still grow.
        self.partial = regex.compile(f"(?:{body})\\Z", flags)

    def alive_from(self, text: str, pos: int) -> int | None:
        """The start of the leftmost match at or after `pos` that reaches the end of `text`, if any (with
        the boundary character before it that some patterns match)."""
        try:
            found = self.partial.search(text, pos, partial=True, timeout=PARTIAL_TIMEOUT)
        except TimeoutError:
            return pos  # not decided in time: held, as if it could grow
        return None if found is None else found.start()

    def releasable(self, text: str, start: int | None) -> int | None:
        """The character before a match (its left boundary) is not part of what it redacts: it may go."""
        if start is not None and start < len(text) and text[start] not in self.chars:
            return start + 1
        return start

    def token_start(self, text: str, stretch: int, hinted: bool, memo: Memo | None = None) -> int | None:
        """Where a match of this token pattern still growing at the end could start; None: nowhere.
        `stretch`: how many characters at the end are in the pattern's alphabet (more than 0); `hinted`:
        the pattern's hint occurs somewhere in `text` (the RE2 pass says). `memo`: what the same question
        found at the stream's earlier ends, so the search starts where a match still could."""
        end = len(text)
        window = min(stretch, self.reach)
        if self.hint is not None and not (hinted and self.hint.search(text, end - window)):
            # No hint yet: only what can come before it in a match, its last characters, can start one.
            tail = text[-self.unhinted_reach:]
            return end - (len(tail) - len(tail.rstrip(self.lead)))
        lower = max(0, end - window - 1)  # - 1: the boundary character before it
        if memo is None:
            return self.releasable(text, self.alive_from(text, lower))
        return self.releasable(text, memo.search(self, text, lower))


    def covers(self, other: "Growing") -> bool:
        """While neither pattern's hint occurs, this one holds back at least as much as `other` does."""
        return (self.hint is not None and other.hint is not None and set(other.lead) <= set(self.lead)
                and other.unhinted_reach <= self.unhinted_reach)

    def keyword_start(self, text: str) -> int | None:
        """The leftmost trigger within reach from which a match is still possible; None: none is."""
        for m in self.pattern.compiled_trigger().finditer(text, max(0, len(text) - self.reach)):
            start = m.start() if self.open_ended else self.releasable(text, self.alive_from(text, m.start()))
            if start is not None:
                return start
        return None


class Memo:
    """One stream's earlier answers of `Growing.alive_from`, in positions of the whole output, so that the
    next search starts late: a match still growing now was one at every earlier end too (a prefix of a
    prefix of a match is one), so it starts at or after the earlier answer, or, when there was none, at the
    earlier end (less the boundary character). Each character is then searched a bounded number of times."""

    def __init__(self) -> None:
        self.offset = 0  # where `text` starts in the whole output
        self._found: dict[Growing, tuple[int | None, int]] = {}  # (start or None, at which end)

    def search(self, growing: Growing, text: str, lower: int) -> int | None:
        earlier = self._found.get(growing)
        if earlier is not None:
            start, end = earlier
            lower = max(lower, (end - 1 if start is None else start) - self.offset)
        found = growing.alive_from(text, lower)
        self._found[growing] = (None if found is None else found + self.offset, len(text) + self.offset)
        return found


class HoldBack:
    """Where the pending text must be held back, for one set of patterns. Built once per policy: `look`
    and `start` run on every chunk of every stream, so what they need per pattern is prepared here."""

    def __init__(self, patterns, flag_only: Sequence = ()) -> None:
        """`flag_only`: patterns whose findings are only counted (action flag): they change no text, so they
        hold nothing back; the RE2 pass still looks for them, and the left context is long enough for them."""
        from llmprod.guardrails.detectors import re2_set, set_regex

        patterns = list(patterns)
        counted = {id(p) for p in flag_only}
        self.tokens = [Growing(p) for p in patterns if p.stream == "token"]
        self.keywords = [Growing(p) for p in patterns if p.stream == "keyword"]
        self.window = max((p.max_len for p in patterns if p.stream == "window" and id(p) not in counted), default=0)
        self.left_context = max([LEFT_CONTEXT, *(p.max_len for p in patterns if id(p) in counted)])
        self._holding_tokens = {i for i, g in enumerate(self.tokens) if id(g.pattern) not in counted}
        self._holding_keywords = {i for i, g in enumerate(self.keywords) if id(g.pattern) not in counted}
        # Without their hints, most token patterns hold back less than another one does (a GitHub token's
        # characters are an e-mail's too, and it looks back less far): those need no look of their own.
        self._covered = {i: [j for j, other in enumerate(self.tokens) if j != i and other.covers(growing)
                             and (not growing.covers(other) or j < i)]
                         for i, growing in enumerate(self.tokens)}
        self._plans: dict[frozenset[int], list[tuple[Growing, bool]]] = {}
        # One RE2 pass answers the questions of `Look`: which keyword triggers, which token patterns' hints
        # and `needs`, and which window patterns occur. A token pattern cannot match without what it needs
        # (its hint by default), nor a keyword one without its trigger, so that is the prefilter too. (A set
        # of the whole patterns would say more precisely which match, but their counted repetitions, {0,63}
        # and {16,200}, make RE2's DFA build new states at every character of a long alphanumeric run: ten
        # times slower there.)
        regexes = [f"(?i){g.pattern.trigger}" for g in self.keywords]
        self._first_hint = len(regexes)
        self._hinted = [i for i, g in enumerate(self.tokens) if g.hint is not None]
        regexes += [self.tokens[i].hint.pattern for i in self._hinted]
        self._first_need = len(regexes)
        self._needy = [i for i, g in enumerate(self.tokens) if g.pattern.needs]
        regexes += [self.tokens[i].pattern.needs for i in self._needy]
        self._first_window = len(regexes)
        windows = [p for p in patterns if p.stream == "window"]
        regexes += [set_regex(p) for p in windows]
        self._window_ids = [id(p) for p in windows]
        self._always = {id(g.pattern) for g in self.tokens if g.hint is None and not g.pattern.needs}
        self._presence = re2_set(regexes) if regexes else None

    def look(self, text: str) -> Look:
        hits = (self._presence.Match(text) or ()) if self._presence is not None else ()
        candidates, triggers, hints = set(self._always), [], set()
        for i in hits:
            if i < self._first_hint:
                triggers.append(i)
                candidates.add(id(self.keywords[i].pattern))
            elif i < self._first_need:
                token = self._hinted[i - self._first_hint]
                hints.add(token)
                if not self.tokens[token].pattern.needs:
                    candidates.add(id(self.tokens[token].pattern))
            elif i < self._first_window:
                candidates.add(id(self.tokens[self._needy[i - self._first_need]].pattern))
            else:
                candidates.add(self._window_ids[i - self._first_window])
        return Look(candidates, triggers, hints)

    def start(self, text: str, floor: int, look: Look | None = None, memo: Memo | None = None) -> int:
        """Index in `text` (left context + pending) from which characters must be held; at least `floor`.
        `memo`: the stream's, with its offset set to where `text` starts in the output."""
        norm = None if text.isascii() else normalize(text)
        if norm is not None and norm.index is not None:
            # Matching runs on the normalised text (fullwidth digits are digits there): decide there, then
            # map back. Normalisation works character by character, so positions map one way.
            held = self._start(norm.text, self.look(norm.text), None)
            original = len(text) if held >= len(norm.text) else norm.index[held]
            return max(original, floor)
        return max(self._start(text, look or self.look(text), memo), floor)

    def _start(self, text: str, look: Look, memo: Memo | None) -> int:
        hold = end = len(text)
        stretches: dict[str, int] = {}  # alphabet → its trailing stretch (patterns share alphabets)
        for growing, hinted in self.plan(look.hints):
            if not hinted and growing.hint is not None:
                # Its hint occurs nowhere: only what can come before it, at most its last characters (the
                # usual case, and the one path every chunk of prose takes, so it is spelled out here).
                tail = text[-growing.unhinted_reach:]
                held = len(tail) - len(tail.rstrip(growing.lead))
                if held and end - held < hold:
                    hold = end - held
                continue
            stretch = stretches.get(growing.chars)
            if stretch is None:
                stretch = stretches[growing.chars] = end - len(text.rstrip(growing.chars))
            if stretch == 0:
                continue  # the text ends in a character no match of it contains
            start = growing.token_start(text, stretch, hinted, memo)
            if start is not None and start < hold:
                hold = start
        for i in look.triggers:
            if i not in self._holding_keywords:
                continue
            start = self.keywords[i].keyword_start(text)
            if start is not None and start < hold:
                hold = start
        if self.window:
            hold = min(hold, end - self.window + 1)
        return max(hold, 0)

    def plan(self, hints: set[int]) -> list[tuple[Growing, bool]]:
        """The token patterns to look at, given whose hints occur: one whose hint does not occur is skipped
        when another one, without its hint either, holds back at least as much. A few plans per policy."""
        key = frozenset(hints)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = [
                (growing, i in hints) for i, growing in enumerate(self.tokens) if i in self._holding_tokens
                and (i in hints or not any(j not in hints and j in self._holding_tokens for j in self._covered[i]))]
        return plan


class OutputScanner:
    def __init__(self, guard, context: str, holdback: HoldBack) -> None:
        self.guard = guard
        self.context = context
        self.checks = guard.deterministic("output")
        self.model_checks = guard.model_checks("output")
        self.every_tokens = min((getattr(c, "every_tokens", EVERY_TOKENS) for c in self.model_checks), default=0)
        self.holdback = holdback
        self.pending = ""
        self.left = ""  # the last released characters (as generated), holdback.left_context of them
        self.released = 0  # characters of the output (as generated) no longer pending
        self.memo = Memo()
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
            if await self._model_block():
                return StreamStep("", blocked=True)
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
        if await self._model_block():
            return StreamStep("", blocked=True)
        return step

    def _release(self, final: bool) -> StreamStep:
        ctx = len(self.left)
        text = self.left + self.pending
        started = time.perf_counter()
        look = self.holdback.look(text)
        self.timings["prefilter"] = self.timings.get("prefilter", 0.0) + time.perf_counter() - started
        # Normalisation leaves ASCII text as it is, so the look's candidates hold for the patterns' text.
        findings = self.guard.scan_with(text, "output", self.checks, self.timings,
                                        candidates=look.candidates if text.isascii() else None)
        self.memo.offset = self.released - ctx
        boundary = len(text) if final else self.holdback.start(text, ctx, look, self.memo)
        if not findings:  # the usual case
            self.left = text[max(0, boundary - self.holdback.left_context):boundary]
            self.pending = text[boundary:]
            self.released += boundary - ctx
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
            return StreamStep(emit, blocked=True)
        for f in sorted(findings, key=lambda f: f.start):
            if f.start < boundary < f.end and f.action != "flag":  # a flag changes no text: nothing to hold
                boundary = f.start
        released = [f for f in findings if f.end <= boundary]
        source = text[ctx:boundary]
        emit = self._redacted(source, released, ctx)
        self._count(released)
        self.left = text[:boundary][-self.holdback.left_context:]
        self.pending = text[boundary:]
        self.released += boundary - ctx
        if emit == source:
            return StreamStep(emit)
        shifted = tuple(replace(f, start=f.start - ctx, end=f.end - ctx) for f in released if f.action == "redact")
        return StreamStep(emit, source=source, redactions=shifted)

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

    async def _model_block(self) -> bool:
        """The model checks on everything received so far: whether they block. A check that fails raises
        CheckUnavailable: the relay ends the stream with an error rather than pass it."""
        text = "".join(self.received_parts)
        findings = await self.guard.run_models("output", [text], self.context, self.timings)
        self._count(findings)
        self.blocked = any(f.action == "block" for f in findings)
        return self.blocked
