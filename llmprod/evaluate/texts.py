"""Evaluation text: a local file, or a named dataset through `datasets` when online."""

from __future__ import annotations

from dataclasses import dataclass

from llmprod import sources
from llmprod.errors import InputError


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


WHAT = "evaluation text"
KINDS = (".txt", ".jsonl", ".md", "")


def load_eval_text(source: str) -> EvalText:
    if source in NAMED_TEXTS:
        return EvalText(_load_named(source, NAMED_TEXTS[source]), source)
    path = sources.local_file(source, WHAT, KINDS, NAMED_TEXTS)
    if path.suffix == ".jsonl":
        text = "\n\n".join(value for _, value in sources.read_records(path, {"text": str}))
    else:
        text = sources.read_text(path)
    if not text.strip():
        raise InputError(f"{source} holds no text to evaluate", hint="give a file with text in it")
    return EvalText(text, str(path))


def _load_named(name: str, spec: NamedText) -> str:
    split = spec.split if spec.max_rows is None else f"{spec.split}[:{spec.max_rows}]"
    rows = sources.load_named(name, WHAT, KINDS, spec.path, spec.config, split=split)
    return spec.joiner.join(rows[spec.field])
