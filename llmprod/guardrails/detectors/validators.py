"""What a regex cannot say: checksums (Luhn, mod-97), valid ranges (SSN areas, IP octets), entropy."""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter


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
