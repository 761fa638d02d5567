"""Calibration samples: token id lists of at most `seq_len`, chosen deterministically by seed.

Sources: a `.txt` file (the whole text, cut into windows), a `.jsonl` or `.parquet` file with a
`text` field or chat `messages` (rendered with the model's chat template), or a named dataset
loaded with `datasets` when online. The same samples feed every backend, and their fingerprint
(a hash of the token ids) goes into llmprod.json so a run can be matched to its data.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmprod import sources
from llmprod.errors import InputError


@dataclass(frozen=True)
class NamedCalibration:
    path: str
    config: str | None
    split: str
    kind: str  # "text" rows, "joined" text (one long text cut into windows) or chat "messages"
    field: str
    description: str


NAMED = {
    "pile-val": NamedCalibration("mit-han-lab/pile-val-backup", None, "validation", "text", "text",
                                 "the Pile validation set (AWQ's calibration data)"),
    "wikitext2": NamedCalibration("Salesforce/wikitext", "wikitext-2-raw-v1", "train", "joined", "text",
                                  "wikitext-2 raw, train split"),
    "c4": NamedCalibration("allenai/c4", "en", "train", "text", "text", "C4 English (GPTQ's calibration data)"),
    "ultrachat": NamedCalibration("HuggingFaceH4/ultrachat_200k", None, "train_sft", "messages", "messages",
                                  "UltraChat 200k conversations, rendered with the chat template"),
}


@dataclass(frozen=True)
class CalibrationSet:
    samples: list[list[int]]
    source: str
    fingerprint: str

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.samples)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self.samples), "tokens": self.tokens,
                "fingerprint": self.fingerprint}


WHAT = "calibration data"
KINDS = (".txt", ".jsonl", ".parquet")


def check_source(source: str) -> None:
    """Fail fast (before loading any model) on a source that cannot work."""
    if source in NAMED:
        sources.check_named(source, WHAT, KINDS)
    else:
        sources.local_file(source, WHAT, KINDS, NAMED)


def load_calibration(source: str, tokenizer, num_samples: int, seq_len: int, seed: int) -> CalibrationSet:
    check_source(source)
    if source in NAMED:
        kind, records = _named_records(source, NAMED[source], num_samples, seed)
    else:
        kind, records = _file_records(Path(source).expanduser())
    if kind == "joined":
        samples = _windows("\n\n".join(records), tokenizer, seq_len)
    else:
        samples = [_encode(r, kind, tokenizer)[:seq_len] for r in records]
        samples = [s for s in samples if len(s) > 1]
    if not samples:
        raise InputError(f"{source} gave no calibration samples", hint="give a file with text in it")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(samples)), min(num_samples, len(samples))))
    picked = [samples[i] for i in chosen]
    digest = hashlib.sha256(json.dumps(picked).encode()).hexdigest()[:16]
    return CalibrationSet(picked, source, digest)


def _windows(text: str, tokenizer, seq_len: int) -> list[list[int]]:
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids if getattr(
        tokenizer, "is_fast", False) else tokenizer.encode(text, add_special_tokens=False)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    body = seq_len - len(bos)
    return [bos + ids[i:i + body] for i in range(0, len(ids) - body + 1, body)] or [bos + ids]


def _encode(record: Any, kind: str, tokenizer) -> list[int]:
    if kind == "messages":
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("calibration data has chat messages but the model's tokenizer has no chat template",
                             hint="use a 'text' field, or a model with a chat template")
        text = tokenizer.apply_chat_template(record, tokenize=False)
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return tokenizer(record, verbose=False)["input_ids"]


def _file_records(path: Path) -> tuple[str, list[Any]]:
    if path.suffix == ".txt":
        return "joined", [sources.read_text(path)]
    records = sources.read_records(path, {"messages": list, "text": str})
    kinds = {field for field, _ in records}
    if len(kinds) > 1:
        raise InputError(f"{path}: some records have 'text' and some 'messages'", hint="give one kind of record")
    return ("messages" if kinds == {"messages"} else "text"), [value for _, value in records]


def _named_records(name: str, spec: NamedCalibration, num_samples: int, seed: int) -> tuple[str, list[Any]]:
    if spec.path == "allenai/c4":  # one shard, as GPTQ's code does: the full C4 is 300 GB
        data = sources.load_named(name, WHAT, KINDS, spec.path, data_files={"train": "en/c4-train.00000-of-01024.json.gz"},
                                  split="train")
    else:
        data = sources.load_named(name, WHAT, KINDS, spec.path, spec.config, split=spec.split)
    if spec.kind != "joined":
        # Rows are drawn by seed first: tokenizing a whole 200k-row set to keep 256 would waste minutes.
        data = data.shuffle(seed=seed).select(range(min(len(data), num_samples * 4)))
    return spec.kind, list(data[spec.field])
