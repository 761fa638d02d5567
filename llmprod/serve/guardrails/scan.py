"""`llmprod guardrails scan`: a policy over a corpus, each text's verdict and findings."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

from llmprod.errors import InputError, NotFoundError
from llmprod.output import Output
from llmprod.serve.guardrails.policy import load_policy


def read_texts(source: str) -> list[str]:
    if source == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    path = Path(source).expanduser()
    if not path.is_file():
        raise NotFoundError(f"no file {source}", hint="give a .txt (one text per line) or .jsonl (a `text` field)")
    if path.suffix == ".jsonl":
        from llmprod.jsonl import read_jsonl

        texts = []
        for line_no, record in read_jsonl(path):
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise InputError(f"{path} line {line_no}: no string `text` field",
                                 hint='each line must be an object like {"text": "..."}')
            texts.append(text)
        return texts
    if path.suffix not in (".txt", ""):
        raise InputError(f"{path}: unsupported file type {path.suffix}", hint="use .txt or .jsonl")
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason})", hint="convert it to UTF-8") from None


def run_scan(source: str, policy_name: str, stage: str, out: Output) -> None:
    policy = load_policy(policy_name)
    texts = read_texts(source)
    if not texts:
        raise InputError(f"{source} has no texts", hint="one text per line (.txt) or a `text` field (.jsonl)")
    guard = policy.runtime()
    if not policy.checks(stage):
        out.warn(f"policy {policy.name} has no {stage} checks: every text is allowed")
    if guard.model_checks(stage):
        out.info("loading the guard models ...")
        guard.load_models()
    results = asyncio.run(_scan_all(guard, texts, stage))
    verdicts = Counter(r["verdict"] for r in results)
    categories = Counter(f["category"] for r in results for f in r["findings"])
    summary = {"texts": len(texts), "policy": policy.name, "stage": stage,
               "verdicts": {v: verdicts.get(v, 0) for v in ("allow", "flag", "redact", "block")},
               "categories": dict(categories.most_common())}
    out.result({"results": results, "summary": summary}, render=lambda console: _render(console, results, summary))


async def _scan_all(guard, texts: list[str], stage: str) -> list[dict]:
    results = []
    for index, text in enumerate(texts):
        decision = await guard.check_text(text, stage)
        results.append({"index": index, "verdict": decision.verdict,
                        "findings": [f.as_dict() for f in decision.findings]})
    return results


def _render(console, results: list[dict], summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"policy {summary['policy']} ({summary['stage']})", title_justify="left")
    for column in ("#", "verdict", "findings"):
        table.add_column(column)
    style = {"allow": "green", "flag": "yellow", "redact": "cyan", "block": "red"}
    for r in results:
        if r["verdict"] == "allow" and len(results) > 50:
            continue  # long corpora: show what the policy acted on
        findings = ", ".join(f"{f['check']}:{f['category']}@{f['start']}-{f['end']}" for f in r["findings"])
        table.add_row(str(r["index"]), f"[{style[r['verdict']]}]{r['verdict']}[/]", findings or "-")
    console.print(table)
    v = summary["verdicts"]
    console.print(f"{summary['texts']} texts: {v['allow']} allowed, {v['flag']} flagged, {v['redact']} redacted, "
                  f"{v['block']} blocked")
