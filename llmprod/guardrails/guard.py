"""A policy made runnable: every check built (guard models loaded and tried) before the guard exists.

Deterministic checks run first; model checks run after them, concurrently, and only when the cheap layer
did not already block. A check that raises fails closed (`CheckUnavailable`): the gateway answers 503
rather than passing a text nobody checked. What the guard finds and how long each check takes goes to a
`GuardObserver` (the gateway's Prometheus metrics, or the totals of `guardrails scan`).
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property
from pathlib import Path
from typing import Sequence

from llmprod.guardrails import detectors
from llmprod.guardrails.checks.base import CheckType, ModelCheck, PatternCheck, SharedModels
from llmprod.guardrails.normalize import normalize
from llmprod.guardrails.policy import Policy, load_policy
from llmprod.guardrails.redaction import redact
from llmprod.guardrails.registry import CHECK_TYPES
from llmprod.guardrails.types import STAGES, CheckUnavailable, Decision, Finding, GuardObserver, NullObserver


class PolicyGuard:
    """Implements the gateway's Guard interface for one policy. Building it builds every check: a guard
    model that cannot load or an endpoint that does not answer raises here (an InputError), so no caller
    ever holds a guard with a check missing."""

    def __init__(self, policy: Policy, observer: GuardObserver | None = None,
                 registry: dict[str, CheckType] | None = None) -> None:
        registry = registry or CHECK_TYPES
        self.policy = policy
        self.name = policy.name
        self.observer = observer or NullObserver()
        self._shared = SharedModels()
        self.stages: dict[str, list[PatternCheck | ModelCheck]] = {
            stage: [registry[c.check].build(c, self._shared) for c in policy.checks(stage)] for stage in STAGES}
        self.prefilters = {stage: detectors.Prefilter(self.patterns(stage))
                           for stage in STAGES if self.deterministic(stage)}

    async def aclose(self) -> None:
        """Close what the checks opened (pooled connections to guard endpoints)."""
        for model in self._shared.values():
            aclose = getattr(model, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- what the gateway asks --------------------------------------------------------------------------------
    @property
    def has_input_checks(self) -> bool:
        return bool(self.stages["input"])

    @property
    def has_output_checks(self) -> bool:
        return bool(self.stages["output"])

    @property
    def input_mode(self) -> str:
        """"parallel": the gateway may send the request upstream once start_input's deterministic decision allows
        it; "before": only after every input check (the policy's `input_mode`)."""
        return self.policy.input_mode

    def deterministic(self, stage: str) -> list[PatternCheck]:
        return [c for c in self.stages[stage] if isinstance(c, PatternCheck)]

    def model_checks(self, stage: str) -> list[ModelCheck]:
        return [c for c in self.stages[stage] if not isinstance(c, PatternCheck)]

    def patterns(self, stage: str) -> list[detectors.Pattern]:
        """The patterns of a stage's deterministic checks, in check order."""
        return [p for c in self.deterministic(stage) for p in c.detector.patterns]

    def describe(self) -> list[str]:
        lines = [f"policy {self.policy.name} ({self.policy.source})"]
        for stage in STAGES:
            text = ", ".join(f"{c.name}→{c.config.action}" for c in self.stages[stage]) or "nothing checked"
            lines.append(f"{stage}: {text}")
        return lines

    # -- scanning ----------------------------------------------------------------------------------------------
    def scan(self, text: str, stage: str) -> list[Finding]:
        """The deterministic checks of a stage on one text (no model checks), reported to the observer."""
        timings: dict[str, float] = {}
        findings = self.scan_with(text, stage, self.deterministic(stage), timings)
        self.report(stage, findings, timings)
        return findings

    def scan_with(self, text: str, stage: str, checks: Sequence[PatternCheck], timings: dict[str, float],
                  candidates: set[int] | None = None) -> list[Finding]:
        """Findings of deterministic `checks` on one text, spans in the original text; each check's time is
        added to `timings`. `candidates`: the prefilter's answer for this text, where the caller has it."""
        norm = None
        prefilter = self.prefilters.get(stage)
        if candidates is None and prefilter is not None:
            started = time.perf_counter()
            norm = normalize(text)
            candidates = prefilter.candidates(norm.text)
            timings["prefilter"] = timings.get("prefilter", 0.0) + time.perf_counter() - started
        findings: list[Finding] = []
        if candidates is not None and not candidates:  # benign text, the common case: nothing can match
            for check in checks:
                timings.setdefault(check.name, 0.0)
            return findings
        norm = norm or normalize(text)
        now = time.perf_counter()
        for check in checks:
            started = now
            for match in check.detector.find(norm.text, candidates):
                start, end = norm.span(match.start, match.end)
                findings.append(Finding(check.name, match.category, start, end, check.config.action))
            now = time.perf_counter()
            timings[check.name] = timings.get(check.name, 0.0) + now - started
        return findings

    def report(self, stage: str, findings: Sequence[Finding], timings: dict[str, float]) -> None:
        for finding in findings:
            self.observer.finding(stage, finding)
        for check, seconds in timings.items():
            self.observer.latency(stage, check, seconds)

    async def run_models(self, stage: str, texts: list[str], context: str,
                         timings: dict[str, float]) -> list[Finding]:
        """The stage's model checks, concurrently. One that raises makes the whole stage unavailable."""
        checks = self.model_checks(stage)
        if not checks:
            return []

        async def one(check: ModelCheck) -> list[Finding]:
            started = time.perf_counter()
            try:
                if stage == "input":
                    return await check.check_input(texts)
                return await check.check_output(texts[0], context)
            finally:
                timings[check.name] = timings.get(check.name, 0.0) + time.perf_counter() - started

        results = await asyncio.gather(*(one(c) for c in checks), return_exceptions=True)
        for check, result in zip(checks, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                self.observer.failure(stage, check.name)
                raise CheckUnavailable(stage, check.name, result) from result
        return [f for found in results for f in found]

    async def check_input(self, texts: list[str], model_texts: list[str] | None = None) -> Decision:
        """Every text through the deterministic checks; `model_texts` (default: the same) through the
        model checks, whose verdict is on a conversation's untrusted turns (Llama Guard judges the last)."""
        decision, pending = self.start_input(texts, model_texts)
        return decision if pending is None else await pending

    def start_input(self, texts: list[str], model_texts: list[str] | None = None
                    ) -> tuple[Decision, asyncio.Future[Decision] | None]:
        """The deterministic checks now: their decision (the texts redacted; blocked if they block). The model
        checks, when there are any and the cheap layer did not block, as a started task whose result is the
        whole decision. Model checks never change the texts, so the redacted texts can go upstream before
        their verdict (input_mode parallel); the caller must await or cancel the task."""
        timings: dict[str, float] = {}
        checks = self.deterministic("input")
        per_text = [self.scan_with(t, "input", checks, timings) for t in texts]
        findings = [f for found in per_text for f in found]
        self.report("input", findings, timings)
        decision = Decision([redact(t, found) for t, found in zip(texts, per_text)], findings)
        judged = texts if model_texts is None else model_texts
        if not judged or decision.blocked or not self.model_checks("input"):
            return decision, None

        async def models() -> Decision:
            model_timings: dict[str, float] = {}
            found: list[Finding] = []
            try:
                found = await self.run_models("input", judged, judged[-1], model_timings)
            finally:
                self.report("input", found, model_timings)
            return Decision(decision.texts, findings + found)

        return decision, asyncio.ensure_future(models())

    async def check_output(self, text: str, context: str) -> Decision:
        timings: dict[str, float] = {}
        findings = self.scan_with(text, "output", self.deterministic("output"), timings)
        try:
            if not any(f.action == "block" for f in findings):
                findings += await self.run_models("output", [text], context, timings)
        finally:
            self.report("output", findings, timings)
        return Decision([redact(text, findings)], findings)

    async def check_text(self, text: str, stage: str, context: str = "") -> Decision:
        """One text through every check of a stage (for `llmprod guardrails scan`)."""
        if stage == "input":
            return await self.check_input([text])
        return await self.check_output(text, context)

    @cached_property
    def output_holdback(self):
        """The output scanners' hold-back plan, built at the first stream and shared by all."""
        from llmprod.guardrails.stream import HoldBack

        acting = {id(p) for c in self.deterministic("output") if c.config.action != "flag" for p in c.detector.patterns}
        return HoldBack(self.patterns("output"), [p for p in self.patterns("output") if id(p) not in acting])

    def output_stream(self, context: str):
        from llmprod.guardrails.stream import OutputScanner

        return OutputScanner(self, context, self.output_holdback)


def load_guard(policy: str | Path, observer: GuardObserver | None = None) -> PolicyGuard:
    """A policy file or bundled policy name, loaded and built."""
    return PolicyGuard(load_policy(policy), observer)
