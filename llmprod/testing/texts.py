"""Generated model output of different shapes, as the tokens an engine would stream (seeded, reproducible).

The output guardrails hold back text that a pattern could still grow into, and how much depends on the
text's shape: prose breaks every word, code and JSON make long runs without a blank, base64 longer ones.
Benchmarks and tests stream these through the scanner and the gateway.

    prose   words of 2-9 letters, punctuation, each token a word with its leading space
    runs    3-character alphanumeric tokens, a space every 24 tokens (a random-weights model's output)
    code    Python-like lines: dotted names, calls, numbers, paths, operators; 1-4 character tokens
    json    JSON without spaces: keys, strings, numbers, nested lists; 1-4 character tokens
    base64  76-character lines of base64, 4-character tokens
"""

from __future__ import annotations

import random
import string

KINDS = ("prose", "runs", "code", "json", "base64")
_WORDS = ("the", "model", "serves", "tokens", "and", "each", "request", "waits", "for", "its", "first",
          "answer", "while", "batches", "grow", "memory", "is", "paged", "so", "cache", "blocks", "fit", "a",
          "longer", "context", "than", "before", "when", "traffic", "peaks", "latency", "rises", "slowly")
_NAMES = ("config", "model", "layers", "hidden_size", "num_heads", "cache", "block_table", "self", "request",
          "tokens", "max_position_embeddings", "engine", "scheduler", "output", "logits", "attention_mask")


def tokens(kind: str, count: int, seed: int = 0, run_length: int = 24) -> list[str]:
    """`count` tokens of generated text of one kind (`run_length`: tokens between two spaces, for runs)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        out.extend(_runs(rng, run_length) if kind == "runs" else _PIECES[kind](rng))
    return out[:count]


def _split(text: str, rng: random.Random, low: int = 1, high: int = 4) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(low, high)
        pieces.append(text[i:i + n])
        i += n
    return pieces


def _prose(rng: random.Random) -> list[str]:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
    words[0] = words[0].capitalize()
    return [" " + w for w in words[:-1]] + [" " + words[-1] + rng.choice(".,;:")]


def _runs(rng: random.Random, length: int = 24) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    run = ["".join(rng.choice(alphabet) for _ in range(3)) for _ in range(length)]
    return [" " + run[0], *run[1:]]


def _code(rng: random.Random) -> list[str]:
    name = ".".join(rng.choice(_NAMES) for _ in range(rng.randint(1, 3)))
    line = rng.choice([
        f"    {name} = {rng.choice(_NAMES)}({rng.randint(0, 4096)}, dim=-1)\n",
        f"    if {name}[{rng.randint(0, 63)}] >= {rng.random():.4f}:\n",
        f"    path = '/opt/models/{rng.choice(_NAMES)}/shard-{rng.randint(0, 99):05d}.safetensors'\n",
        f"    return torch.cat([{name}, {rng.choice(_NAMES)}.view(-1, {rng.randint(1, 128)})], dim=0)\n",
    ])
    return _split(line, rng)


def _json(rng: random.Random) -> list[str]:
    record = (f'{{"id":{rng.randint(1, 10 ** 6)},"name":"{rng.choice(_NAMES)}","score":{rng.random():.5f},'
              f'"tags":["{rng.choice(_WORDS)}","{rng.choice(_WORDS)}"],"size":[{rng.randint(1, 512)},'
              f'{rng.randint(1, 512)}]}},')
    return _split(record, rng)


def _base64(rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits + "+/"
    line = "".join(rng.choice(alphabet) for _ in range(76)) + "\n"
    return [line[i:i + 4] for i in range(0, len(line), 4)]


_PIECES = {"prose": _prose, "code": _code, "json": _json, "base64": _base64}
