"""Prompts for a load test: synthetic ones of a token length, or a file of real ones."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmprod import sources
from llmprod.errors import InputError

# Common English words: synthetic prompts read as text, so tokenizers split them typically.
_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
          "they you were her she there been one all we their has would when if so no will more about what time "
          "up out into can only other new some could these two may first then do any like my now over such our "
          "man me even most made after also did many before must through back years where much your way well "
          "down should because each just those people how too little state good very make world still own see "
          "men work long get here between both life being under never day same another know while last might "
          "us great old year off come since against go came right used take three").split()
# Without the model's tokenizer, a word of this list is about 1.3 tokens in common BPE vocabularies.
TOKENS_PER_WORD = 1.3


@dataclass(frozen=True)
class Prompt:
    text: str | None = None  # completions, or a single user turn for chat
    messages: list[dict[str, Any]] | None = None
    tokens: int | None = None  # as counted by the tokenizer, when there was one

    def chat_messages(self) -> list[dict[str, Any]]:
        return self.messages or [{"role": "user", "content": self.text or ""}]

    def completion_text(self) -> str:
        if self.text is not None:
            return self.text
        return "\n".join(str(m.get("content", "")) for m in self.messages or [])


def load_tokenizer(model: str):
    """The model's tokenizer if it can be loaded here (a local directory, or a hub id), else None.

    A served name is often neither (vLLM's --served-model-name): then nothing is imported or fetched.
    """
    from llmprod.errors import LlmprodError
    from llmprod.modelio import resolve_model
    from llmprod.sources import hub_offline

    try:
        ref = resolve_model(model)
    except LlmprodError:
        return None
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging

        logging.set_verbosity_error()
        try:
            return AutoTokenizer.from_pretrained(ref.load_path, local_files_only=True)
        except OSError:
            if ref.is_local or hub_offline():
                return None
            return AutoTokenizer.from_pretrained(ref.load_path)
    except Exception:  # no transformers installed, no network, a gated repository
        return None


def synthetic_prompts(count: int, input_tokens: int, tokenizer=None, seed: int = 0) -> list[Prompt]:
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        words = [rng.choice(_WORDS) for _ in range(int(input_tokens / TOKENS_PER_WORD) + 16)]
        # A distinct prefix per request, so prefix caching cannot serve one request from another.
        text = f"{i}: " + " ".join(words)
        if tokenizer is not None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            while len(ids) < input_tokens:
                text += " " + " ".join(rng.choice(_WORDS) for _ in range(32))
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            text = tokenizer.decode(ids[:input_tokens])
            prompts.append(Prompt(text=text, tokens=input_tokens))
        else:
            prompts.append(Prompt(text=" ".join(text.split()[: max(1, int(input_tokens / TOKENS_PER_WORD))])))
    return prompts


def file_prompts(path: Path) -> list[Prompt]:
    """One prompt per line of a .txt file, or a `prompt` / `text` string or chat `messages` per .jsonl record."""
    path = sources.local_file(str(path), "prompts", (".txt", ".jsonl"))
    if path.suffix == ".txt":
        prompts = [Prompt(text=line) for line in sources.read_lines(path)]
    else:
        prompts = [Prompt(messages=value) if field == "messages" else Prompt(text=value)
                   for field, value in sources.read_records(path, {"messages": list, "prompt": str, "text": str})]
    if not prompts:
        raise InputError(f"{path} holds no prompts", hint="one prompt per line (.txt) or per record (.jsonl)")
    return prompts
