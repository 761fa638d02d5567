"""Deterministic detectors: PII, secrets, prompt injection, deny-lists and custom regexes.

Every pattern is compiled with RE2, which matches in time linear in the text (no backtracking), so no
pattern, ours or a policy's, can hang the gateway. RE2 has no look-around or back-references: context
is checked by validators on each candidate instead (Luhn, mod-97, SSN ranges, entropy, ...).

Each pattern also says how it behaves in a stream (see stream.py): a "token" pattern's match is made of
the characters of its `chars` alphabet and needs its `hint` somewhere, so only the text's trailing stretch
of those characters can hold a match still growing; a "keyword" pattern starts at a trigger word and
spans at most `max_len` characters; a "window" pattern can be anything up to `max_len` characters long.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections import Counter
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


# -- validators ----------------------------------------------------------------------------------------------
def digits_of(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_ok(text: str) -> bool:
    digits = digits_of(text)
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def ssn_ok(text: str) -> bool:
    digits = digits_of(text)
    if len(digits) != 9:
        return False
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return area not in (0, 666) and area < 900 and group != 0 and serial != 0


def iban_ok(text: str) -> bool:
    compact = re.sub(r"\s", "", text).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def ipv4_ok(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 and (p == "0" or not p.startswith("0"))
                                   for p in parts)


def ipv6_ok(text: str) -> bool:
    # "a::b" and "std::x" are code; addresses in text carry more digits (the loopback "::1" aside).
    if text.count(":") < 2 or (text != "::1" and sum(c not in ":" for c in text) < 4):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_DATE = re.compile(r"((19|20)\d\d[-./](0?[1-9]|1[0-2])[-./](0?[1-9]|[12]\d|3[01])|"
                   r"(0?[1-9]|[12]\d|3[01])[-./](0?[1-9]|[12]\d|3[01])[-./](19|20)\d\d)$")


_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}$")  # the SSN check's business, valid or not


def phone_ok(text: str) -> bool:
    digits = digits_of(text)
    if text.startswith("+"):
        return 8 <= len(digits) <= 15
    if not 7 <= len(digits) <= 15 or _DATE.match(text) or _SSN_SHAPE.match(text):
        return False
    groups = re.split(r"[\s().-]+", text.strip("()"))
    groups = [g for g in groups if g]
    if len(groups) < 2:
        return False
    # "2019 2020" or "12 345" are numbers in prose; phone groups are 2-4 digits after the first.
    if len(groups) == 2 and "(" not in text and "-" not in text and "." not in text:
        return len(groups[0]) == 3 and len(groups[1]) == 4
    return True


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_PLACEHOLDER = re.compile(r"^(\$\{.*\}|\$\(.*\)|<.*>|\{\{.*\}\}|%\(.*\)s|x+|\*+|\.+|changeme|password|secret|"
                          r"your[_-].*|example.*|dummy.*|test|none|null|true|false)$", re.IGNORECASE)


def quoted_secret_ok(value: str) -> bool:
    return len(value) >= 8 and not _PLACEHOLDER.match(value) and shannon_entropy(value) >= 2.5


def bare_secret_ok(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return (len(value) >= 16 and has_digit and has_alpha and not _PLACEHOLDER.match(value)
            and shannon_entropy(value) >= 3.3)


# -- PII ------------------------------------------------------------------------------------------------------
_NOT_WORD_BEFORE = r"(?:^|[^A-Za-z0-9_])"
_ALNUM = string.ascii_letters + string.digits
_HEX = string.digits + "abcdefABCDEF"
_NOT_DIGIT_BEFORE = r"(?:^|[^0-9A-Za-z+.-])"

PII_PATTERNS = {
    "email": Pattern("email", _NOT_WORD_BEFORE + r"([A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}"
                     r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24})",
                     group=1, hint="@", hint_tail=64, chars=_ALNUM + "._%+-@", lead=_ALNUM + "._%+-"),
    "phone": Pattern("phone", _NOT_DIGIT_BEFORE + r"((?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]\d{2,5}){1,5}"
                     r"|\+\d{7,15})(?:(?:x|ext\.? ?)\d{1,5})?(?:$|[^0-9A-Za-z])", group=1, validate=phone_ok, max_len=40,
                     hint=r"\d", hint_tail=1, chars=string.digits + " ().+-xet", lead="+(",
                     needs=r"\d(?:[ ().-]{0,3}\d){6}"),
    # A number right after a word that announces one ("phone:", "call me on", "fax") needs less shape.
    "phone_context": Pattern("phone", r"(?i)\b(?:phone|tel|telephone|fax|mobile|cell|call|desk|office|whatsapp|"
                             r"contact|reach me|text me)\b[^0-9+()\n]{0,15}\n?[^0-9+()\n]{0,5}"
                             r"((?:\+|\(|\d)[\d ().-]{5,20}\d)(?:(?:x|ext\.? ?)\d{1,5})?(?:$|[^0-9A-Za-z])", group=1,
                             validate=lambda t: 7 <= len(digits_of(t)) <= 15, stream="keyword",
                             trigger=r"phone|tel|fax|mobile|cell|call|desk|office|whatsapp|contact|reach me|text me",
                             max_len=60),
    "card": Pattern("card", _NOT_DIGIT_BEFORE + r"(\d{4}(?:[ -]?\d{2,4}){2,4}|\d{12,19})(?:$|[^0-9A-Za-z])",
                    group=1, validate=luhn_ok, max_len=32, hint=r"\d", hint_tail=1, chars=string.digits + " -",
                    needs=r"\d(?:[ -]?\d){11}", lead="", shrink=True),
    "ssn": Pattern("ssn", _NOT_DIGIT_BEFORE + r"(\d{3}[- ]\d{2}[- ]\d{4})(?:$|[^0-9A-Za-z])", group=1, validate=ssn_ok,
                   max_len=16, hint=r"\d", hint_tail=1, chars=string.digits + " -", lead="",
                   needs=r"\d{3}[- ]\d{2}[- ]\d{4}"),
    "iban": Pattern("iban", r"(?:^|[^A-Za-z0-9])([A-Za-z]{2}\d{2}(?:[A-Za-z0-9]{11,30}|(?: [A-Za-z0-9]{4}){2,7}"
                    r"(?: [A-Za-z0-9]{1,4})?))(?:$|[^A-Za-z0-9])", group=1,
                    validate=iban_ok, max_len=48, hint=r"[A-Za-z]{2}\d", hint_tail=3, chars=_ALNUM + " ",
                    lead=string.ascii_letters,
                    needs=r"(?:^|[^A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[A-Za-z0-9]{11}| [A-Za-z0-9]{4} [A-Za-z0-9]{4})"),
    "ipv4": Pattern("ipv4", r"(?:^|[^0-9.])((?:\d{1,3}\.){3}\d{1,3})(?:$|[^0-9.]|\.(?:$|[^0-9]))", group=1,
                    validate=ipv4_ok, max_len=20, hint=r"\d", hint_tail=1, chars=string.digits + ".", lead="",
                    needs=r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d"),
    "ipv6": Pattern("ipv6", r"(?:^|[^0-9A-Za-z:])((?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|"
                    r"(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}|(?:[0-9A-Fa-f]{1,4}:){2,7}:|"
                    r"::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})(?:$|[^0-9A-Za-z:])", group=1, validate=ipv6_ok,
                    max_len=48, hint=":", hint_tail=5, chars=_HEX + ":", lead=_HEX,
                    needs=r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"),
}
PII_ENTITIES = {"email": ["email"], "phone": ["phone", "phone_context"], "card": ["card"], "ssn": ["ssn"], "iban": ["iban"],
                "ip": ["ipv4", "ipv6"]}

# -- secrets --------------------------------------------------------------------------------------------------
_SECRET_NAME = (r"(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|access[_.-]?key|auth[_.-]?key|"
                r"private[_.-]?key|credential)")
_KEYWORD_VALUE = r"\s*(?:[\"']?\s*(?:=>|:=|=|:)\s*)[\"'`]?"
SECRET_PATTERNS = {
    "aws": [
        Pattern("aws_access_key_id", r"(?:^|[^A-Z0-9])((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|A3T[A-Z0-9])"
                r"[A-Z0-9]{16})(?:$|[^A-Z0-9])", group=1, max_len=24,
                hint=r"A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA|3T)", hint_tail=4,
                chars=string.ascii_uppercase + string.digits, lead=string.ascii_uppercase + string.digits),
        Pattern("aws_secret_access_key", r"(?i)(?:aws)?_?(?:secret)_?(?:access)?_?key(?:_id)?" + _KEYWORD_VALUE +
                r"([A-Za-z0-9/+=]{40})(?:$|[^A-Za-z0-9/+=])", group=1, stream="keyword",
                trigger=r"secret_?(?:access)?_?key(?:_id)?" + _KEYWORD_VALUE, max_len=120),
    ],
    "github": [Pattern("github_token", r"(?:^|[^A-Za-z0-9_])((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|"
                       r"github_pat_[A-Za-z0-9_]{22,255})", group=1, max_len=300, hint=r"gh[pousr]_|github_pat_",
                       hint_tail=11, chars=_ALNUM + "_", lead=_ALNUM + "_")],
    "gitlab": [Pattern("gitlab_token", r"(?:^|[^A-Za-z0-9_])((?:glpat|glptt|gldt|glrt|glsoat|glffct|glcbt|gloas|"
                       r"glimt|glagent|glft)-[A-Za-z0-9_-]{20,64}|GR1348941[A-Za-z0-9_-]{20,64})", group=1,
                       max_len=80, hint=r"gl[a-z]+-|GR1348941", hint_tail=9, chars=_ALNUM + "_-", lead=_ALNUM + "-")],
    "slack": [
        Pattern("slack_token", r"(?:^|[^A-Za-z0-9])(xox[abposre]-[A-Za-z0-9-]{10,250}|xapp-\d-?[A-Za-z0-9/-]{10,250}|"
                r"xapp-[A-Za-z0-9/-]{20,250})", group=1, max_len=260, hint=r"xox[a-z]-|xapp-", hint_tail=5,
                chars=_ALNUM + "/-", lead=string.ascii_letters + "-"),
        Pattern("slack_webhook", r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,200})",
                group=1, max_len=220, hint=r"hooks\.slack\.com", hint_tail=30, chars=_ALNUM + ":/.+_-",
                lead=string.ascii_letters + ":/."),
    ],
    "private_key": [Pattern("private_key", r"(-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
                            r"(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?)",
                            group=1, stream="keyword", trigger=r"-----BEGIN", max_len=16500, open_ended=True)],
    "jwt": [Pattern("jwt", r"(?:^|[^A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)",
                    group=1, max_len=4096, hint="eyJ", hint_tail=3, chars=_ALNUM + "_.-", lead=string.ascii_letters,
                    needs=r"eyJ[A-Za-z0-9_-]{8,}\.eyJ")],
    "generic": [
        Pattern("generic_secret", r"(?i)[A-Za-z0-9_.-]*(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|"
                r"access[_.-]?key|auth[_.-]?key|private[_.-]?key|credential)[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)\s*"
                r"[\"'`]([^\"'`\s]{8,200})[\"'`]", group=1, validate=quoted_secret_ok, stream="keyword",
                trigger=_SECRET_NAME + r"[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)", max_len=260),
        Pattern("generic_secret", r"(?i)[A-Za-z0-9_.-]*(?:api[_.-]?key|apikey|secret|token|passw(?:or)?d|"
                r"access[_.-]?key|auth[_.-]?key)[A-Za-z0-9_.-]*\s*(?:=>|:=|=|:)\s*([A-Za-z0-9_+/.=-]{16,200})",
                group=1, validate=bare_secret_ok, stream="keyword",
                trigger=_SECRET_NAME + r"[A-Za-z0-9_.-]*[\"']?\s*(?:=>|:=|=|:)", max_len=260),
    ],
}

# -- prompt injection -------------------------------------------------------------------------------------------
# General phrasing of the families in the literature: overriding instructions, extracting the system prompt
# or credentials, switching the model into a "mode" or persona without rules, and framing devices (fiction,
# hypotheticals) used together with a request for something protected.
_W = r"[\s\S]{0,60}?"  # a short gap of anything (bounded: RE2 keeps it linear)
_TARGET = (r"(?:system prompt|initial prompt|hidden prompt|original prompt|(?:your|the) (?:instructions|rules|prompt)|"
           r"pass ?words?|pass ?codes?|pass ?phrases?|secret (?:key|word|code|phrase|token)|api key|credentials?|"
           r"access (?:code|token)|pin(?: code)?|contrase[nñ]a|mot de passe|passwort|senha|parola d'ordine)")
INJECTION_PATTERNS = {
    "instruction_override": Pattern(
        "instruction_override",
        r"(?i)\b(?:ignore|disregard|forget|override|bypass|skip|neglect|drop|abandon|discard)\b[\s\S]{0,40}?\b(?:all|any|every|"
        r"previous|prior|above|earlier|preceding|foregoing|former|original|initial|existing|your|the|those|these|what)"
        r"\b[\s\S]{0,40}?\b(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance|context|"
        r"messages?|commands?|constraints|restrictions|programming|told|said|above)\b",
        stream="window", max_len=160),
    "instruction_override_new": Pattern(
        "instruction_override",
        r"(?i)\b(?:new|updated|revised|real|actual|true)\s+(?:instructions?|rules|directives|task)\s*(?::|follow|are\b)|"
        r"\bfrom now on,?\s+(?:you|your|ignore|only|respond|answer|act)\b|\bdo not follow (?:the|your|any)\b",
        stream="window", max_len=80),
    "prompt_extraction": Pattern(
        "prompt_extraction",
        r"(?i)\b(?:what(?:'s| is| are| was| were)|tell|give|share|reveal|show|print|repeat|output|display|leak|disclose|"
        r"confirm|provide|spell|write|say|send|dump|recite|type|hint)\b" + _W + r"\b(?:your|the|our|its|my|this|that|"
        r"system|secret|hidden)\b" + _W + r"\b" + _TARGET + r"\b",
        stream="window", max_len=200),
    "prompt_extraction_verbatim": Pattern(
        "prompt_extraction",
        r"(?i)\b(?:repeat|print|output|reproduce|recite)\b[\s\S]{0,30}?\b(?:everything|all|the (?:text|words|"
        r"message|content))\b[\s\S]{0,30}?\b(?:above|before|so far|verbatim|word for word)\b|"
        r"\bwhat (?:were|are) you (?:told|instructed|programmed)\b",
        stream="window", max_len=120),
    "mode_switch": Pattern(
        "mode_switch",
        r"(?i)\b(?:developer|dev|debug|maintenance|admin|administrator|god|sudo|root|unrestricted|jailbreak|"
        r"jailbroken|system|diagnostic|test|override|unlocked|dan)\s+mode\b|\bdo anything now\b|\bjailbreak\b|"
        r"\b(?:i am|i'm|this is) (?:your|the|an?) (?:developer|creator|administrator|admin|owner|programmer|"
        r"system administrator|engineer)\b|\bsecurity audit\b|\bsystem override\b",
        stream="window", max_len=80),
    "roleplay_jailbreak": Pattern(
        "roleplay_jailbreak",
        r"(?i)\b(?:you are now|you're now|act as|pretend (?:to be|you are|you're)|roleplay as|role-play as|"
        r"play the role of|from now on you are|stay in character|simulate)\b[\s\S]{0,80}?\b(?:no|without|free of|"
        r"free from|any|ignore|unfiltered|uncensored|unrestricted|evil|amoral|immoral|jailbroken|not bound|"
        r"doesn't have to|does not have to|never refuses?)\b[\s\S]{0,30}?\b(?:restrictions?|filters?|filtering|"
        r"rules|limits|limitations|guidelines|policies|ethics|morals|censorship|refuse|boundaries|constraints|"
        r"anything)\b|\b(?:no|without) (?:any )?(?:special )?(?:filtering|filters|restrictions|censorship|"
        r"content policy|guardrails|safety guidelines)\b",
        stream="window", max_len=200),
    "framed_request": Pattern(
        "framed_request",
        r"(?i)\b(?:imagine|suppose|pretend|hypothetically|in a (?:fictional|hypothetical|parallel|alternate) "
        r"(?:world|universe|scenario|story)|let's play a game|for a (?:story|novel|screenplay|research)|"
        r"as a thought experiment|in this (?:world|game|story|scenario))\b[\s\S]{0,200}?\b" + _TARGET + r"\b",
        stream="window", max_len=320),
    "credential_request": Pattern(
        "credential_request",
        r"(?i)\b(?:your|the|our|system|admin|account|secret)\s+(?:pass ?word|pass ?code|pass ?phrase|secret key|"
        r"secret word|secret code|api key|credentials)\b[\s\S]{0,3}\?|\bi (?:really )?need (?:the|your) "
        r"(?:pass ?word|pass ?code|secret|credentials)\b|" + r"\b" + _TARGET + r"\s*\?",
        stream="window", max_len=80),
    "instruction_override_aside": Pattern(
        "instruction_override",
        r"(?i)\b(?:regardless of|instead of|never mind|forget about|disregarding)\b[\s\S]{0,20}?\b(?:the |any |your |all |"
        r"that|this|previous|prior|above|earlier|what)|\bignore (?:the|this|that) [a-z]+(?: [a-z]+)? and "
        r"(?:say|state|write|print|respond|output|answer|tell|reply|return)\b|\bforget (?:about )?"
        r"(?:that|this|it|everything)\b",
        stream="window", max_len=80),
    # The same override in the languages attacks most often switch to (a switch of language is itself a
    # known evasion); words for "ignore / forget" near "previous / above" and "instructions".
    "instruction_override_multilingual": Pattern(
        "instruction_override",
        r"(?i)(?:ignor[a-z]*|olvid[a-z]*|oubli[a-z]*|vergiss[a-z]*|esque[cç][a-z]*|dimentic[a-z]*|игнорир[а-я]*|"
        r"забуд[а-я]*|αγνο[α-ωά-ώ]*|تجاهل)[\s\S]{0,40}?(?:anterior[a-z]*|pr[ée]c[ée]dent[a-z]*|vorherig[a-z]*|"
        r"obig[a-z]*|precedent[a-z]*|предыдущ[а-я]*|προηγο[α-ωά-ώ]*|السابقة)[\s\S]{0,20}?"
        r"|(?:忽略|无视|忽视|無視|무시)|(?:निर्देशों|निर्देश)[\s\S]{0,20}?(?:अनदेखी|अनदेखा|नज़रअंदाज़)",
        stream="window", max_len=120),
    "mode_switch_enter": Pattern(
        "mode_switch",
        r"(?i)\b(?:enter(?:ing)?|activate|activating|switch(?:ing)? (?:to|into)|enable|enabling|engage|now in|"
        r"put you in|turn on)\s+(?:a |the |your )?['\"]?[a-z][a-z -]{0,30}['\"]? ?mode\b",
        stream="window", max_len=80),
    "data_exfiltration": Pattern(
        "data_exfiltration",
        r"(?i)\b(?:the|other|another|this|that) users?'s? (?:personal|private|e-?mail|home|birth ?(?:date|day)|"
        r"date of birth|address|location|phone|initials|full name|password|data|information|details|favou?rite|"
        r"account|secret|age|salary|ssn|social security)|\bwhere (?:does|do|is) the user\b|"
        r"\b(?:users?|customers?)(?: in| from)? (?:your|the) database\b",
        stream="window", max_len=80),
    "obfuscation": Pattern(
        "obfuscation",
        r"(?i)\b(?:decode|encode|translate|convert|reply|respond|answer|write|spell|give|provide|tell|say|output)"
        r"\b[\s\S]{0,60}?\b(?:morse code|base ?64|rot ?13|hexadecimal|binary code|pig latin|leetspeak|"
        r"reverse order|backwards|interlace[a-z]*|one (?:letter|character) at a time|character by character)",
        stream="window", max_len=120),
    "bribery": Pattern(
        "persuasion",
        r"(?i)\b(?:i(?:'ll| will| would)|we(?:'ll| will)) (?:give|pay|donate|tip|reward|send)\b[\s\S]{0,60}?"
        r"\bif you\b|\byou (?:agreed|promised|said you would)\b",
        stream="window", max_len=120),
    "payload_splitting": Pattern(
        "payload_splitting",
        r"(?i)\bstrings?\b[\s\S]{0,400}?\b[a-z]\s*=\s*[a-z]\s*\+\s*[a-z]\b",
        stream="window", max_len=480),
    "fake_dialogue": Pattern(
        "fake_dialogue",
        r"(?:^|\s)Q:[\s\S]{1,600}?\sA:[\s\S]{1,600}?\sQ:|(?:^|\n)\s*(?:System|SYSTEM|Assistant|ASSISTANT)\s*:",
        stream="window", max_len=1300),
}
INJECTION_CATEGORIES = sorted({p.category for p in INJECTION_PATTERNS.values()})


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
