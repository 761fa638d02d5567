"""JSON Lines files: one object per line, errors naming the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from llmprod.errors import InputError


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})",
                                 hint="each line of a .jsonl file is one JSON object") from exc
