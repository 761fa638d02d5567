"""The output scanner alone: CPU per streamed token and hold-back per token, by kind of text.

    python benchmarks/stream_scanner.py --out benchmarks/results/stream-scanner-cpu.json

Each kind of generated text (llmprod.testing.texts: prose, runs, code, json, base64, and runs of several
lengths) is fed token by token through the default policy's output scanner, as the gateway does with one
event per read. Reported per kind: microseconds of scanner CPU per token (median of --repeats), and after
each token how much received text is still held back, in characters and in tokens (median, p99, max).
Work per token should not grow with the length of a run, and on prose the hold-back should stay within
a token or two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def held_back(pieces: list[str], guard) -> tuple[list[int], list[int], str]:
    """After each feed: characters held back and whole or partial tokens held back; the text released."""
    async def go():
        scanner = guard.output_stream("")
        ends, total, released = [], 0, 0
        chars, toks, out = [], [], []
        for piece in pieces:
            total += len(piece)
            ends.append(total)
            step = await scanner.feed(piece)
            out.append(step.text)
            released += len(step.text)
            # redaction changes lengths; the scanner's pending text is what is held
            held = len(scanner.pending)
            chars.append(held)
            toks.append(sum(1 for end in ends if end > total - held))
        out.append((await scanner.finish()).text)
        scanner.close()
        return chars, toks, "".join(out)

    return asyncio.run(go())


def cost_per_token(pieces: list[str], guard, repeats: int) -> float:
    async def go():
        scanner = guard.output_stream("")
        started = time.process_time()
        for piece in pieces:
            await scanner.feed(piece)
        await scanner.finish()
        scanner.close()
        return time.process_time() - started

    return statistics.median(asyncio.run(go()) for _ in range(repeats)) / len(pieces) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream-scanner-cpu.json")
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from llmprod.guardrails import PolicyGuard, load_policy
    from llmprod.testing import texts

    guard = PolicyGuard(load_policy("default"))
    streams = {kind: texts.tokens(kind, args.tokens) for kind in texts.KINDS}
    for length in (96, 384):  # the same runs, fewer breaks: work per token must not grow
        streams[f"runs of {length}"] = texts.tokens("runs", args.tokens, run_length=length)
    results = {}
    for kind, pieces in streams.items():
        chars, toks, released = held_back(pieces, guard)
        results[kind] = {
            "tokens": len(pieces), "chars": sum(map(len, pieces)),
            "us_per_token": round(cost_per_token(pieces, guard, args.repeats), 2),
            "held_chars": {"median": statistics.median(chars), "p99": quantile(chars, 0.99), "max": max(chars)},
            "held_tokens": {"median": statistics.median(toks), "p99": quantile(toks, 0.99), "max": max(toks)},
            "unchanged": released == "".join(pieces),
        }
        print(f"{kind:>12}: {results[kind]['us_per_token']:7.2f} us/token, held tokens median "
              f"{results[kind]['held_tokens']['median']}, p99 {results[kind]['held_tokens']['p99']}, max "
              f"{results[kind]['held_tokens']['max']}; chars p99 {results[kind]['held_chars']['p99']}",
              file=sys.stderr)
    doc = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {"platform": platform.platform(), "python": platform.python_version()},
           "policy": "default (output: secrets block, pii redact)", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
