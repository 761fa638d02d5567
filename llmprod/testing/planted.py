"""Personal data and secrets of every kind the guardrails know, generated valid (Luhn, mod-97, SSN ranges),
planted in generated text: what the output scanner must never let through, however the text is cut."""

from __future__ import annotations

import random
import string

from llmprod.guardrails.detectors import luhn_ok
from llmprod.testing import texts


def card(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    number = next(body + d for d in string.digits if luhn_ok(body + d))
    sep = rng.choice(["", " ", "-"])
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    value = f"DE{check:02d}{bban}"
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value


def planted(rng: random.Random) -> tuple[str, str]:
    """(kind, value): one piece of personal data or one secret."""
    alnum = string.ascii_letters + string.digits
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
    kind = rng.choice(["email", "card", "phone", "ssn", "iban", "aws", "github", "jwt", "assignment"])
    value = {
        "email": lambda: f"{word}.{rng.choice(['lee', 'diaz', 'kim'])}@{rng.choice(['example', 'mail'])}.org",
        "card": lambda: card(rng),
        "phone": lambda: rng.choice(["+44 20 7946 0958", "+1 415 555 0199", "(415) 555-0199"]),
        "ssn": lambda: f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "iban": lambda: iban(rng),
        "aws": lambda: "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "github": lambda: "ghp_" + "".join(rng.choice(alnum) for _ in range(36)),
        "jwt": lambda: ("eyJ" + "".join(rng.choice(alnum) for _ in range(20)) + ".eyJ"
                        + "".join(rng.choice(alnum) for _ in range(30)) + "."
                        + "".join(rng.choice(alnum) for _ in range(24))),
        "assignment": lambda: "".join(rng.choice(alnum) for _ in range(24)),
    }[kind]()
    return kind, value


BEFORE = (" ", " (", ": ", "\n")
AFTER = (" ", ". ", ", ", ")\n")


def document(rng: random.Random, kind: str, plants: int = 3) -> tuple[str, list[str]]:
    """Generated text of `kind` (llmprod.testing.texts) with `plants` values planted between its tokens,
    each with a blank or punctuation on both sides; the values, as they appear."""
    pieces = texts.tokens(kind, 60, seed=rng.randrange(1 << 30))
    values = []
    for _ in range(plants):
        what, value = planted(rng)
        at = rng.randrange(len(pieces) + 1)
        if what == "assignment":
            text = f' api_key = "{value}" '
        else:
            text = rng.choice(BEFORE) + value + rng.choice(AFTER)
        pieces.insert(at, text)
        values.append(value)
    return "".join(pieces), values


def cut(rng: random.Random, text: str, longest: int = 12) -> list[str]:
    """The text in chunks of 1 to `longest` characters, cut at random."""
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, longest)
        pieces.append(text[i:i + n])
        i += n
    return pieces
