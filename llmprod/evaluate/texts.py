"""Evaluation text: a local file, or a named dataset through `datasets` when online."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmprod.errors import InputError, NotFoundError, OfflineError, require
from llmprod.jsonl import read_jsonl
from llmprod.modelio import hub_offline


@dataclass(frozen=True)
class NamedText:
    """A standard evaluation text: where it lives on the hub and how its rows are joined."""

    path: str
    config: str | None
    split: str
    field: str
    joiner: str
    max_rows: int | None = None


# As in the GPTQ/AWQ evaluation code: wikitext-2 raw test lines joined with "\n\n"; for C4 the
# first 1,100 validation documents of the English shard, joined with a space.
NAMED_TEXTS = {
    "wikitext2": NamedText("Salesforce/wikitext", "wikitext-2-raw-v1", "test", "text", "\n\n"),
    "c4": NamedText("allenai/c4", "en", "validation", "text", " ", max_rows=1100),
}


@dataclass(frozen=True)
class EvalText:
    text: str
    source: str  # what to report: a path or a dataset name


def load_eval_text(source: str) -> EvalText:
    if source in NAMED_TEXTS:
        return EvalText(_load_named(source, NAMED_TEXTS[source]), source)
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"no such file: {source}",
                            hint=f"give a .txt or .jsonl file, or one of: {', '.join(NAMED_TEXTS)}")
    if path.is_dir():
        raise InputError(f"{source} is a directory", hint="give a .txt or .jsonl file")
    if path.suffix == ".jsonl":
        text = "\n\n".join(_jsonl_texts(path))
    elif path.suffix in {".txt", ".md", ""}:
        text = path.read_text(encoding="utf-8")
    else:
        raise InputError(f"cannot read {path.suffix} files as evaluation text",
                         hint="use .txt (the whole file) or .jsonl (a 'text' field per line)")
    if not text.strip():
        raise InputError(f"{source} holds no text to evaluate", hint="give a file with text in it")
    return EvalText(text, str(path))


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InputError(f"{path}:{lineno}: no string 'text' field", hint='each line needs {"text": "..."}')
        texts.append(row["text"])
    return texts


def _load_named(name: str, spec: NamedText) -> str:
    if hub_offline():
        raise OfflineError(f"the named dataset {name!r} needs the Hugging Face hub, which is offline here",
                           hint="pass a local .txt or .jsonl file with --dataset instead")
    datasets = require("datasets", "quantize")
    split = spec.split if spec.max_rows is None else f"{spec.split}[:{spec.max_rows}]"
    try:
        rows = datasets.load_dataset(spec.path, spec.config, split=split)
    except Exception as exc:  # datasets raises many types for "no network"
        raise OfflineError(f"cannot load the named dataset {name!r}: {str(exc).splitlines()[0]}",
                           hint="check the network, or pass a local .txt or .jsonl file with --dataset") from exc
    return spec.joiner.join(rows[spec.field])
