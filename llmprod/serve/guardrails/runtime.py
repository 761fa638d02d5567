"""A loaded policy, ready for the gateway: deterministic checks first, model checks after, concurrently."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

from llmprod.serve.guardrails import detectors
from llmprod.serve.guardrails.normalize import normalize
from llmprod.serve.guardrails.policy import CHECKS, CheckConfig, Policy
from llmprod.serve.guardrails.types import Decision, Finding

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "ssn": "[SSN]", "iban": "[IBAN]",
                "ipv4": "[IP]", "ipv6": "[IP]"}


def placeholder(category: str) -> str:
    return PLACEHOLDERS.get(category, f"[{category.upper()}]")


@dataclass
class CompiledCheck:
    config: CheckConfig
    detector: detectors.Detector | None = None
    model: Any = None  # LlamaGuardCheck | PromptGuardCheck

    @property
    def name(self) -> str:
        return self.config.check


def build_detector(config: CheckConfig) -> detectors.Detector:
    options = config.options
    if config.check == "pii":
        return detectors.Detector(detectors.pii_patterns(options.get("entities", list(detectors.PII_ENTITIES))))
    if config.check == "secrets":
        return detectors.Detector(detectors.secret_patterns(options.get("kinds", list(detectors.SECRET_PATTERNS))))
    if config.check == "injection":
        return detectors.Detector(detectors.injection_patterns(options.get("categories",
                                                                           detectors.INJECTION_CATEGORIES)))
    if config.check == "denylist":
        return detectors.Detector([detectors.denylist_pattern(options["words"],
                                                              options.get("case_sensitive", False))])
    if config.check == "regex":
        max_len = options.get("max_length", 128)
        return detectors.Detector([
            detectors.Pattern(item["name"], item["pattern"], case_insensitive=not options.get("case_sensitive", False),
                              stream="window", max_len=max_len) for item in options["patterns"]])
    raise AssertionError(config.check)


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace the spans of redact findings with typed placeholders; overlapping spans merge."""
    spans = sorted((f.start, f.end, f.category) for f in findings if f.action == "redact" and f.end > f.start)
    if not spans:
        return text
    merged: list[list[Any]] = []
    for start, end, category in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, category])
    out, cursor = [], 0
    for start, end, category in merged:
        out.append(text[cursor:start])
        out.append(placeholder(category))
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


class PolicyGuard:
    """Implements the gateway's Guard interface for one policy."""

    def __init__(self, policy: Policy, model_loader=None) -> None:
        self.policy = policy
        self.name = policy.name
        self.metrics = None
        self._model_loader = model_loader
        self.stages = {stage: [self._compile(c) for c in policy.checks(stage)] for stage in ("input", "output")}
        self._prefilters = {stage: detectors.Prefilter(self.patterns(stage))
                            for stage in ("input", "output") if self.deterministic(stage)}

    def _compile(self, config: CheckConfig) -> CompiledCheck:
        if CHECKS[config.check].model_based:
            return CompiledCheck(config)
        return CompiledCheck(config, detector=build_detector(config))

    def attach_metrics(self, metrics) -> None:
        self.metrics = metrics

    def load_models(self) -> None:
        """Load the model-based checks now (start-up), so a missing model fails before serving."""
        from llmprod.serve.guardrails.models import load_model_check

        loader = self._model_loader or load_model_check
        cache: dict[tuple, Any] = {}
        for checks in self.stages.values():
            for check in checks:
                if CHECKS[check.name].model_based and check.model is None:
                    key = (check.name, tuple(sorted((k, str(v)) for k, v in check.config.options.items()
                                                    if k not in ("threshold", "every_tokens"))))
                    if key not in cache:
                        cache[key] = loader(check.config)
                    check.model = cache[key]

    # -- what the gateway asks --------------------------------------------------------------------------------
    @property
    def has_input_checks(self) -> bool:
        return bool(self.stages["input"])

    @property
    def has_output_checks(self) -> bool:
        return bool(self.stages["output"])

    def deterministic(self, stage: str) -> list[CompiledCheck]:
        return [c for c in self.stages[stage] if c.detector is not None]

    def patterns(self, stage: str) -> list[detectors.Pattern]:
        """The patterns of a stage's deterministic checks, in check order."""
        return [p for c in self.deterministic(stage) for p in c.detector.patterns]

    def model_checks(self, stage: str) -> list[CompiledCheck]:
        return [c for c in self.stages[stage] if c.detector is None]

    def describe(self) -> list[str]:
        lines = [f"policy {self.policy.name} ({self.policy.source})"]
        for stage in ("input", "output"):
            checks = self.stages[stage]
            text = ", ".join(f"{c.name}→{c.config.action}" for c in checks) or "nothing checked"
            lines.append(f"{stage}: {text}")
        return lines

    # -- scanning ----------------------------------------------------------------------------------------------
    def scan(self, text: str, stage: str) -> list[Finding]:
        """The deterministic checks of a stage on one text; spans refer to the original text."""
        return self.scan_with(text, stage, self.deterministic(stage))

    def scan_with(self, text: str, stage: str, checks: Sequence[CompiledCheck],
                  timings: dict[str, float] | None = None, candidates: set[int] | None = None) -> list[Finding]:
        """Findings of `checks` on one text. Each check's time goes to the latency metric, or is added to
        `timings` (a stream's scanner sums its chunks and reports once per request). `candidates`: the
        prefilter's answer for this text, where the caller already has it."""
        spent = {} if timings is None else timings
        norm = None
        prefilter = self._prefilters.get(stage)
        if candidates is None and prefilter is not None:
            started = time.perf_counter()
            norm = normalize(text)
            candidates = prefilter.candidates(norm.text)
            spent["prefilter"] = spent.get("prefilter", 0.0) + time.perf_counter() - started
        findings: list[Finding] = []
        if candidates is not None and not candidates:  # benign text, the common case: nothing can match
            for check in checks:
                spent.setdefault(check.name, 0.0)
        else:
            norm = norm or normalize(text)
            now = time.perf_counter()
            for check in checks:
                started = now
                for match in check.detector.find(norm.text, candidates):
                    start, end = norm.span(match.start, match.end)
                    findings.append(Finding(check.name, match.category, start, end, check.config.action))
                now = time.perf_counter()
                spent[check.name] = spent.get(check.name, 0.0) + now - started
        if timings is None:
            self.observe_timings(stage, spent)
        return findings

    def observe_timings(self, stage: str, timings: dict[str, float]) -> None:
        for check, seconds in timings.items():
            self._observe(stage, check, seconds)

    def _observe(self, stage: str, check: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.guard_latency.labels(stage, check).observe(seconds)

    async def _run_models(self, stage: str, texts: list[str], context: str) -> list[Finding]:
        checks = self.model_checks(stage)
        if not checks:
            return []

        async def one(check: CompiledCheck) -> list[Finding]:
            started = time.perf_counter()
            if stage == "input":
                found = await check.model.check_input(texts, check.config)
            else:
                found = await check.model.check_output(texts[0], context, check.config)
            self._observe(stage, check.name, time.perf_counter() - started)
            return found

        results = await asyncio.gather(*(one(c) for c in checks))
        return [f for found in results for f in found]

    async def check_input(self, texts: list[str]) -> Decision:
        per_text = [self.scan(t, "input") for t in texts]
        findings = [f for found in per_text for f in found]
        if not any(f.action == "block" for f in findings):
            # Model checks only when the cheap layer did not already block (deterministic first).
            findings += await self._run_models("input", texts, texts[-1] if texts else "")
        return Decision([redact(t, found) for t, found in zip(texts, per_text)], findings)

    async def check_output(self, text: str, context: str) -> Decision:
        findings = self.scan(text, "output")
        if not any(f.action == "block" for f in findings):
            findings += await self._run_models("output", [text], context)
        return Decision([redact(text, findings)], findings)

    async def check_text(self, text: str, stage: str, context: str = "") -> Decision:
        """One text through every check of a stage (for `llmprod guardrails scan`)."""
        if stage == "input":
            return await self.check_input([text])
        return await self.check_output(text, context)

    @cached_property
    def _output_holdback(self):
        """The output scanners' hold-back plan, built at the first stream and shared by all."""
        from llmprod.serve.guardrails.stream import HoldBack

        return HoldBack(self.patterns("output"))

    def output_stream(self, context: str):
        from llmprod.serve.guardrails.stream import OutputScanner

        return OutputScanner(self, context, self._output_holdback)

