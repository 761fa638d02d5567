"""Patterns on RE2 and how they find matches: linear time, so no pattern, ours or a policy's, can hang the
gateway. RE2 has no look-around or back-references: context is checked by validators on each candidate.

Each pattern also says how it behaves in a stream (see guardrails/stream.py): a "token" pattern's match is
made of the characters of its `chars` alphabet and needs its `hint` somewhere, so only the text's trailing
stretch of those characters can hold a match still growing; a "keyword" pattern starts at a trigger word
and spans at most `max_len` characters; a "window" pattern can be anything up to `max_len` characters long.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from llmprod.errors import require


def compile_re2(pattern: str, case_insensitive: bool = False):
    require("re2", "serve")
    import re2

    options = re2.Options()
    options.case_sensitive = not case_insensitive
    options.max_mem = 64 << 20
    options.log_errors = False
    return re2.compile(pattern, options)


@dataclass(frozen=True)
class Match:
    category: str
    start: int  # in the normalised text
    end: int


@dataclass
class Pattern:
    category: str
    regex: str
    group: int = 0  # the capture group that is the sensitive span
    validate: Callable[[str], bool] | None = None
    case_insensitive: bool = False
    stream: str = "token"  # "token" | "keyword" | "window"
    max_len: int = 256
    trigger: str | None = None  # "keyword" patterns: where a match can start
    # "token" patterns: what a run must contain before it can become a match (an "@", a digit, "ghp_"),
    # and how many trailing characters could still be the start of one when it does not.
    hint: str | None = None
    hint_tail: int = 0
    # "token" patterns: a regex every complete match contains, tighter than the hint where the hint is
    # common ("12 digits" for a card, not "a digit"); what the stream scanner's prefilter looks for.
    needs: str | None = None
    # "token" patterns: every character a match (its sensitive group) can contain, for str.rstrip; and
    # those that can come before its hint in a match (None: the same), at most `hint_tail` of them.
    chars: str = string.ascii_letters + string.digits + string.punctuation
    lead: str | None = None
    # "keyword" patterns whose match can go on past where a partial match says (an optional tail that a
    # lazy quantifier leaves out): held for their whole reach after the trigger.
    open_ended: bool = False
    # A match its validator refuses may hold a valid shorter one ending at a separator inside it.
    shrink: bool = False
    _compiled: object = field(default=None, init=False, repr=False)
    _trigger: object = field(default=None, init=False, repr=False)

    def compiled(self):
        if self._compiled is None:
            self._compiled = compile_re2(self.regex, self.case_insensitive)
        return self._compiled

    def compiled_trigger(self):
        if self._trigger is None and self.trigger:
            self._trigger = compile_re2(self.trigger, case_insensitive=True)
        return self._trigger

    def find(self, text: str) -> Iterable[Match]:
        # Not finditer: our patterns consume one character of context on each side (RE2 has no
        # look-around), so the next search starts where the sensitive group ended, not where the match did.
        regex = self.compiled()
        pos = 0
        while pos <= len(text):
            m = regex.search(text, pos)
            if m is None:
                return
            start, end = m.span(self.group)
            pos = max(end, m.start() + 1)
            if start < 0 or end <= start:
                continue
            if self.validate is not None and not self.validate(text[start:end]):
                end = self._shorter(text, m.start(), start, end)
                if end is None:
                    continue
            yield Match(self.category, start, end)

    def _shorter(self, text: str, at: int, start: int, end: int) -> int | None:
        """The longest valid match that ends at a separator inside a greedy one that failed its validator:
        "4111 1111 1111 1111 07" is a card followed by a number, not a 18-digit non-card. None: no such."""
        if not self.shrink:
            return None
        for cut in range(end - 1, start, -1):
            if text[cut] in " -" and text[cut - 1] not in " -":
                m = self.compiled().search(text[:cut], at)
                if m is not None and m.start(self.group) == start and self.validate(text[start:m.end(self.group)]):
                    return m.end(self.group)
        return None


class Detector:
    """A check made of patterns, most specific first."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = list(patterns)

    def find(self, text: str, candidates: set[int] | None = None) -> list[Match]:
        """Matches of all patterns (or of those whose id() is in `candidates`); where two overlap, the earlier
        pattern (the more specific) wins."""
        found: list[Match] = []
        for pattern in self.patterns:
            if candidates is not None and id(pattern) not in candidates:
                continue
            for match in pattern.find(text):
                if not any(m.start < match.end and match.start < m.end for m in found):
                    found.append(match)
        return found


class Prefilter:
    """One RE2 pass over a text that says which of many patterns match anywhere in it.

    Benign text (the common case) then costs one scan however many patterns a policy has; only the
    patterns that can match run again to find their spans and validate them.
    """

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = list(patterns)
        self._set = re2_set([set_regex(p) for p in self.patterns])

    def candidates(self, text: str) -> set[int]:
        hits = self._set.Match(text) or ()
        return {id(self.patterns[i]) for i in hits}


def set_regex(pattern: Pattern) -> str:
    """A pattern's regex as an entry of an RE2 set (flags inline)."""
    return ("(?i)" if pattern.case_insensitive else "") + pattern.regex


def re2_set(regexes: Sequence[str]):
    """An RE2 set: `.Match(text)` lists the indices of the regexes found anywhere in the text, in one pass."""
    require("re2", "serve")
    import re2

    options = re2.Options()
    options.max_mem = 256 << 20
    options.log_errors = False
    found = re2.Set.SearchSet(options)
    for regex in regexes:
        found.Add(regex)
    found.Compile()
    return found
