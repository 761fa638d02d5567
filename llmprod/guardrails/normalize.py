"""Text normalisation before matching, keeping a map back to the original characters.

NFKC (fullwidth digits, ligatures, compatibility forms), format characters removed (zero-width spaces and
joiners, soft hyphens, bidi controls), stray combining marks dropped, and letters that look like Latin
ones (Cyrillic and Greek homoglyphs) folded to Latin. Each character is normalised on its own, so the
result of a window equals the window of the result: the streaming scanner depends on that.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Cyrillic and Greek letters that render like Latin ones, the usual way to slip "ignоre" (Cyrillic о)
# or "раypal" past a filter. Only look-alikes: a Greek word stays mostly Greek.
_HOMOGLYPHS = {
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ү": "y",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}


@dataclass(frozen=True)
class Normalized:
    text: str
    index: list[int] | None  # index[i] = position in the original of normalised char i; None: identical

    def span(self, start: int, end: int) -> tuple[int, int]:
        """A span of the normalised text as a span of the original."""
        if self.index is None:
            return start, end
        if start >= len(self.index):
            tail = self.index[-1] + 1 if self.index else 0
            return tail, tail
        return self.index[start], self.index[end - 1] + 1 if end > start else self.index[start]


# Characters that normalisation changes even in NFKC-normal text: format characters (Cf: zero-width,
# bidi controls, soft hyphen, tags), the main blocks of combining marks, and the homoglyphs above.
_CHANGED = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ufff9-\ufffb\U000110bd\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f" + "".join(_HOMOGLYPHS) + "]")


def normalize(text: str) -> Normalized:
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not _CHANGED.search(text)):
        return Normalized(text, None)  # the common cases cost one or two C-speed scans
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            index.append(i)
            continue
        if unicodedata.category(ch) == "Cf":
            continue  # zero-width space / joiner, soft hyphen, bidi controls, BOM
        for c in unicodedata.normalize("NFKC", ch):
            if unicodedata.combining(c):
                continue
            out.append(c)
            index.append(i)
    return Normalized(_fold_mixed_words("".join(out)), index)


_WORD = re.compile(r"\w+")
_LOOKALIKE = str.maketrans(_HOMOGLYPHS)


def _fold_mixed_words(text: str) -> str:
    """Fold look-alike letters only inside words that also have Latin letters ("раypal", "ignоre"): a word
    written wholly in Cyrillic or Greek is a real word in that script and stays as it is."""
    def fold(match: re.Match) -> str:
        word = match.group()
        if any("a" <= c.lower() <= "z" for c in word) and any(c in _HOMOGLYPHS for c in word):
            return word.translate(_LOOKALIKE)
        return word

    return _WORD.sub(fold, text)
