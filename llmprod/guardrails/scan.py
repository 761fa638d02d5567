"""`llmprod guardrails scan`: a policy over a corpus, each text's verdict and findings, each check's latency."""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections import Counter, defaultdict

from llmprod import sources
from llmprod.errors import InputError, OperationFailed
from llmprod.guardrails.guard import PolicyGuard
from llmprod.guardrails.policy import load_policy
from llmprod.guardrails.registry import CHECK_TYPES
from llmprod.guardrails.types import CheckUnavailable, Finding
from llmprod.output import Output


def read_texts(source: str) -> list[str]:
    """One text per line of a .txt file or of stdin (`-`), or the `text` field of each .jsonl record."""
    if source == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    path = sources.local_file(source, "texts to scan", (".txt", "", ".jsonl"))
    if path.suffix == ".jsonl":
        return [text for _, text in sources.read_records(path, {"text": str})]
    return sources.read_lines(path)


class CheckLatencies:
    """A GuardObserver that keeps every check's time per text, for the scan's summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def finding(self, stage: str, finding: Finding) -> None:
        pass

    def latency(self, stage: str, check: str, seconds: float) -> None:
        self.seconds[check].append(seconds)

    def failure(self, stage: str, check: str) -> None:
        pass

    def summary(self) -> dict[str, dict[str, float]]:
        def ms(values: list[float], q: int) -> float:
            return round(1000 * (statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]), 3)

        return {check: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99), "total_ms": round(1000 * sum(v), 3)}
                for check, v in self.seconds.items() if v}


def run_scan(source: str, policy_name: str, stage: str, out: Output) -> dict:
    """{"results": per text, "summary": counts and latencies}. Builds the guard (its models) first."""
    policy = load_policy(policy_name)
    texts = read_texts(source)
    if not texts:
        raise InputError(f"{source} has no texts", hint="one text per line (.txt) or a `text` field (.jsonl)")
    if not policy.checks(stage):
        out.warn(f"policy {policy.name} has no {stage} checks: every text is allowed")
    if any(CHECK_TYPES[c.check].loads_model for c in policy.input + policy.output):
        out.info("loading the guard models ...")
    latencies = CheckLatencies()
    guard = PolicyGuard(policy, observer=latencies)
    results = asyncio.run(_scan_all(guard, texts, stage))
    verdicts = Counter(r["verdict"] for r in results)
    categories = Counter(f["category"] for r in results for f in r["findings"])
    summary = {"texts": len(texts), "policy": policy.name, "stage": stage,
               "verdicts": {v: verdicts.get(v, 0) for v in ("allow", "flag", "redact", "block")},
               "categories": dict(categories.most_common()),
               "latency": latencies.summary()}
    return {"results": results, "summary": summary}


async def _scan_all(guard: PolicyGuard, texts: list[str], stage: str) -> list[dict]:
    results = []
    try:
        for index, text in enumerate(texts):
            decision = await guard.check_text(text, stage)
            results.append({"index": index, "verdict": decision.verdict,
                            "findings": [f.as_dict() for f in decision.findings]})
    except CheckUnavailable as exc:
        raise OperationFailed(f"text {len(results)}: {exc}: {exc.cause}",
                              hint="check the guard model or its endpoint, then scan again") from None
    finally:
        await guard.aclose()
    return results
