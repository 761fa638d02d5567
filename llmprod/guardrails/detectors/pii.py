"""Personal data: e-mail, phone numbers, payment cards, US SSNs, IBANs, IP addresses."""

from __future__ import annotations

import string

from llmprod.guardrails.detectors.engine import Pattern
from llmprod.guardrails.detectors.validators import (
    digits_of,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    luhn_ok,
    phone_ok,
    ssn_ok,
)

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
