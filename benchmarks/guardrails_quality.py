"""Quality and speed of the deterministic guardrail layer on public corpora.

    python benchmarks/guardrails_quality.py ../shared/corpora --out benchmarks/results/guardrails-quality.json

Reads the corpora by path (see their SOURCES.md; nothing of them is copied here) and measures:
- PII span recall per entity type on presidio-research's synthetic set: a labelled span counts as found
  when a finding of the matching category overlaps it;
- secret recall on the positive examples of noseyparker's rules for the kinds llmprod detects;
- block rate of the `default` policy's input stage on PurpleLlama's prompt-injection attacks (`user_input`);
- false-positive rate (any finding) of the `default` input stage on GSM8K's benign questions;
- speed: the default policy's input check on a ~2,000-token prompt, p50/p99, beside the same call with an
  empty policy (the reference: what the gateway pays without guardrails), as added milliseconds.
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

import yaml

from llmprod.guardrails import PolicyGuard
from llmprod.guardrails.checks.base import CheckConfig
from llmprod.guardrails.policy import Policy, load_policy

PRESIDIO_TYPES = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card", "IBAN_CODE": "iban",
                  "IP_ADDRESS": "ip", "US_SSN": "ssn"}
CATEGORY_OF = {"email": {"email"}, "phone": {"phone"}, "card": {"card"}, "iban": {"iban"}, "ip": {"ipv4", "ipv6"},
               "ssn": {"ssn"}}
# noseyparker rule ids for the kinds the issue lists: AWS key ids and secret keys, GitHub, GitLab and Slack
# tokens, private key blocks, JWTs, generic api_key/secret/password assignments.
SECRET_RULES = {
    "aws": ["np.aws.1", "np.aws.2", "np.aws.6"],
    "github": ["np.github.1", "np.github.2", "np.github.3", "np.github.4", "np.github.7"],
    "gitlab": ["np.gitlab.1", "np.gitlab.2", "np.gitlab.3"],
    "slack": ["np.slack.2", "np.slack.3", "np.slack.4", "np.slack.5", "np.slack.6"],
    "private_key": ["np.pem.1"],
    "jwt": ["np.jwt.1"],
    "generic": ["np.generic.1", "np.generic.2", "np.generic.5"],
}


def pii_recall(corpora: Path) -> dict:
    records = json.loads((corpora / "synth_dataset_v2.json").read_text())
    guard = PolicyGuard(Policy("pii", "bench", input=[CheckConfig("pii", "redact", "input", {}, 0)]))
    found = {k: 0 for k in CATEGORY_OF}
    total = {k: 0 for k in CATEGORY_OF}
    for record in records:
        findings = guard.scan(record["full_text"], "input")
        for span in record["spans"]:
            kind = PRESIDIO_TYPES.get(span["entity_type"])
            if kind is None:
                continue
            total[kind] += 1
            start, end = span["start_position"], span["end_position"]
            if any(f.category in CATEGORY_OF[kind] and f.start < end and start < f.end for f in findings):
                found[kind] += 1
    return {k: {"recall": round(found[k] / total[k], 4), "found": found[k], "labelled": total[k]}
            for k in CATEGORY_OF if total[k]}


def secret_recall(corpora: Path) -> dict:
    rules = {}
    for path in sorted((corpora / "noseyparker_rules").glob("*.yml")):
        for rule in yaml.safe_load(path.read_text()).get("rules", []):
            rules[rule["id"]] = rule
    guard = PolicyGuard(Policy("secrets", "bench", input=[CheckConfig("secrets", "block", "input", {}, 0)]))
    result = {}
    for kind, ids in SECRET_RULES.items():
        examples = [e for rule_id in ids for e in rules[rule_id].get("examples", [])]
        hits = sum(1 for e in examples if guard.scan(e, "input"))
        result[kind] = {"recall": round(hits / len(examples), 4), "found": hits, "examples": len(examples)}
    found = sum(r["found"] for r in result.values())
    examples = sum(r["examples"] for r in result.values())
    result["all"] = {"recall": round(found / examples, 4), "found": found, "examples": examples}
    return result


def injection_block_rate(corpora: Path, guard: PolicyGuard) -> dict:
    cases = json.loads((corpora / "prompt_injection.json").read_text())
    by_variant: dict[str, list[int]] = {}
    for case in cases:
        blocked = any(f.action == "block" for f in guard.scan(case["user_input"], "input"))
        by_variant.setdefault(case["injection_variant"], []).append(int(blocked))
    flat = [b for v in by_variant.values() for b in v]
    return {"block_rate": round(sum(flat) / len(flat), 4), "cases": len(flat),
            "by_variant": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_variant.items())}}


def benign_false_positives(corpora: Path, guard: PolicyGuard) -> dict:
    questions = [json.loads(line)["question"] for line in (corpora / "test.jsonl").read_text().splitlines() if line]
    flagged = []
    for i, q in enumerate(questions):
        findings = guard.scan(q, "input")
        if findings:
            flagged.append({"index": i, "categories": sorted({f.category for f in findings})})
    return {"false_positive_rate": round(len(flagged) / len(questions), 4), "flagged": len(flagged),
            "questions": len(questions), "examples": flagged[:10]}


def speed(guard: PolicyGuard, repeats: int) -> dict:
    """Added latency of the input check on a ~2,000-token prompt (8,000 characters of benign prose)."""
    import pydoc_data.topics as topics

    text = " ".join(topics.topics.values())[:8000]

    class NoGuard:  # the reference: the gateway with --no-guardrails awaits nothing
        async def check_input(self, texts):
            return None

    empty = NoGuard()

    async def timed(g) -> list[float]:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            await g.check_input([text])
            samples.append(time.perf_counter() - start)
        return samples

    async def both():
        for _ in range(20):  # warm-up (compile patterns, caches)
            await guard.check_input([text])
            await empty.check_input([text])
        ref, pol = [], []
        for _ in range(5):  # interleaved rounds: machine noise hits both alike
            ref += await timed(empty)
            pol += await timed(guard)
        return ref, pol

    ref, pol = asyncio.run(both())

    def pct(samples, q):
        s = sorted(samples)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    return {"prompt_chars": len(text), "samples": len(pol),
            "reference_ms": {"p50": round(pct(ref, 0.5), 4), "p99": round(pct(ref, 0.99), 4)},
            "policy_ms": {"p50": round(pct(pol, 0.5), 4), "p99": round(pct(pol, 0.99), 4)},
            "added_ms": {"p50": round(pct(pol, 0.5) - pct(ref, 0.5), 4),
                         "p99": round(pct(pol, 0.99) - pct(ref, 0.99), 4)},
            "mean_policy_ms": round(statistics.mean(pol) * 1000, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpora", type=Path, help="the directory of ../shared/corpora")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/guardrails-quality.json"))
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    default = PolicyGuard(load_policy("default"))
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "pii_recall": pii_recall(args.corpora),
        "secret_recall": secret_recall(args.corpora),
        "injection": injection_block_rate(args.corpora, default),
        "benign": benign_false_positives(args.corpora, default),
        "speed_default_policy": speed(default, args.repeats),
        "floors": {"pii_recall": 0.90, "secret_recall": 0.90, "injection_block_rate": 0.50,
                   "benign_false_positive_rate": 0.01, "added_ms_p50": 1.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("pii_recall", "secret_recall", "speed_default_policy")}, indent=1))
    print(json.dumps({"injection": result["injection"]["block_rate"], "by": result["injection"]["by_variant"],
                      "benign": {k: v for k, v in result["benign"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
