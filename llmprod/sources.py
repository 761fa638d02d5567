"""What a user points a command at to read: a .txt, .jsonl or .parquet file, or a named dataset on the hub.

Calibration data (quantize), evaluation text (perplexity), texts to scan (guardrails scan) and prompts
(bench) are all read here: one offline check, and one shape of error, each naming the file (and the line)
and saying what to give instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from llmprod.errors import InputError, NotFoundError, OfflineError, require


def hub_offline() -> bool:
    """The user said not to reach the Hugging Face hub (its libraries' variables)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _kinds(kinds: Iterable[str]) -> str:
    """(".txt", ".jsonl", ".parquet") → ".txt, .jsonl or .parquet"."""
    shown = [k for k in kinds if k]
    return " or ".join(filter(None, [", ".join(shown[:-1]), shown[-1]]))


def local_file(source: str, what: str, kinds: Iterable[str], named: Iterable[str] = ()) -> Path:
    """`source` as a readable file of one of `kinds` (suffixes; "" for none), or an InputError saying what to give."""
    kinds, named = tuple(kinds), tuple(named)
    accepted = f"a {_kinds(kinds)} file" + (f", or one of: {', '.join(named)}" if named else "")
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"no such file: {source}", hint=f"give {what} as {accepted}")
    if path.is_dir():
        raise InputError(f"{source} is a directory", hint=f"give {what} as {accepted}")
    if path.suffix not in kinds:
        raise InputError(f"cannot read {path.suffix or 'extension-less'} files as {what}", hint=f"use {accepted}")
    return path


def check_named(name: str, what: str, kinds: Iterable[str]) -> None:
    """A named dataset comes from the hub: refused at once when the hub is off."""
    if hub_offline():
        raise OfflineError(f"the named dataset {name!r} needs the Hugging Face hub, which is offline here",
                           hint=f"give {what} as a local {_kinds(kinds)} file instead")


def load_named(name: str, what: str, kinds: Iterable[str], path: str, config: str | None = None, **kwargs):
    """A dataset through `datasets` (the `quantize` extra), its failures one clear line."""
    check_named(name, what, kinds)
    datasets = require("datasets", "quantize")
    try:
        return datasets.load_dataset(path, config, **kwargs)
    except Exception as exc:  # datasets raises many types for "no network"
        raise OfflineError(f"cannot load the named dataset {name!r}: {str(exc).splitlines()[0]}",
                           hint=f"check the network, or give {what} as a local {_kinds(kinds)} file") from exc


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason})", hint="convert it to UTF-8") from None


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file, one record each."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of a JSON Lines file."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {lineno}: not valid JSON ({exc.msg})",
                                 hint="each line of a .jsonl file is one JSON object") from None
            except UnicodeDecodeError as exc:
                raise InputError(f"{path} is not UTF-8 text ({exc.reason})", hint="convert it to UTF-8") from None


def read_records(path: Path, fields: dict[str, type]) -> list[tuple[str, Any]]:
    """(field, value) of every record of a .jsonl or .parquet file: the first of `fields` (name → type: str
    for a text, list for chat messages) that the record has with the right type."""
    if path.suffix == ".parquet":
        rows: Iterable[tuple[int, Any]] = enumerate(require("pyarrow.parquet", "quantize").read_table(path).to_pylist(), 1)
        where = "row"
    else:
        rows, where = read_jsonl(path), "line"
    records = []
    for number, row in rows:
        found = next(((name, row[name]) for name, kind in fields.items()
                      if isinstance(row, dict) and isinstance(row.get(name), kind)), None)
        if found is None:
            wanted = " or ".join(f"a {'string' if kind is str else 'list'} {name!r} field" for name, kind in fields.items())
            example = ", ".join(f'{{"{name}": {"..." if kind is str else "[...]"}}}' for name, kind in fields.items())
            raise InputError(f"{path} {where} {number}: needs {wanted}", hint=f"e.g. {example}")
        records.append(found)
    return records
