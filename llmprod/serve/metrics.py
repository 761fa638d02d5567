"""Prometheus collectors of the gateway: latency and throughput as the client sees them.

Each gateway owns a registry (tests build several in one process); `/metrics` renders it. With several
gateway processes (`serve --workers N`) every process writes its values to files in one directory
(prometheus_client's multiprocess mode) and `/metrics`, whichever process answers it, sums them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

from llmprod.serve.keys import charge_current

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Buckets in seconds: TTFT runs from a few ms (a hot GPU) to tens of seconds (a queue on a CPU);
# inter-token latency from sub-ms to about a second.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
                20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25,
               0.5, 1.0, 2.5)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)
GUARD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@contextmanager
def shared_between_processes(directory: str):
    """Within it, metrics made in this process live in files under `directory`, where the other gateway
    processes' are too (prometheus_client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR for the processes
    started meanwhile, and the value class prometheus_client would have picked at import for this one)."""
    from prometheus_client import values

    before = os.environ.get(MULTIPROC_ENV), values.ValueClass
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.get_value_class()
    try:
        yield
    finally:
        if before[0] is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before[0]
        values.ValueClass = before[1]


@dataclass
class GatewayMetrics:
    registry: object = field(init=False)
    shared: str | None = None  # `serve --workers`' metrics directory; made within shared_between_processes(it)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("llmprod_requests", "Requests answered by the gateway, by route and HTTP status.",
                                ["route", "status"], registry=registry)
        self.in_flight = Gauge("llmprod_requests_in_flight", "Requests being answered now (all /v1 routes).",
                               registry=registry, multiprocess_mode="livesum")
        self.ttft = Histogram("llmprod_time_to_first_token_seconds",
                              "From the request's arrival at the gateway to the first generated text sent.",
                              ["route"], buckets=TTFT_BUCKETS, registry=registry)
        self.itl = Histogram("llmprod_inter_token_latency_seconds",
                             "Between consecutive chunks of generated text sent to a streaming client.",
                             ["route"], buckets=ITL_BUCKETS, registry=registry)
        self.e2e = Histogram("llmprod_e2e_request_latency_seconds",
                             "From the request's arrival to the last byte of the answer.",
                             ["route"], buckets=E2E_BUCKETS, registry=registry)
        self.client_requests = Counter("llmprod_client_requests", "Generation requests by client (--api-keys name) "
                                       "and HTTP status.", ["key", "status"], registry=registry)
        self.client_tokens = Counter("llmprod_client_tokens", "Prompt + completion tokens by client, from usage.",
                                     ["key"], registry=registry)
        self.rate_limited = Counter("llmprod_rate_limited", "Requests refused with 429 by a client's limit.",
                                    ["key", "limit"], registry=registry)
        self.prompt_tokens = Counter("llmprod_prompt_tokens", "Prompt tokens, from the upstream's usage.",
                                     ["route"], registry=registry)
        self.output_tokens = Counter("llmprod_output_tokens",
                                     "Generated tokens, from the upstream's usage; rate() of it is tokens/s.",
                                     ["route"], registry=registry)
        self.engine_up = Gauge("llmprod_engine_up", "1 while the upstream engine answers its health check.",
                               registry=registry, multiprocess_mode="livemostrecent")
        self.engine_restarts = Counter("llmprod_engine_restarts", "Times the supervised engine was restarted.",
                                       registry=registry)
        self.guard_verdicts = Counter("llmprod_guardrail_verdicts",
                                      "Guardrail findings that led to an action, by stage, check, category, action.",
                                      ["stage", "check", "category", "action"], registry=registry)
        self.guard_latency = Histogram("llmprod_guardrail_latency_seconds",
                                       "One guardrail check's time for one request and stage (a stream's chunks "
                                       "summed; check=prefilter is the shared RE2 pass).",
                                       ["stage", "check"], buckets=GUARD_BUCKETS, registry=registry)
        self.input_cancelled = Counter("llmprod_guardrail_input_cancelled",
                                       "Requests the engine had already received (input_mode parallel) when the input "
                                       "model checks blocked them: cancelled there, answered 400.",
                                       ["route"], registry=registry)
        self.guard_fields = Counter("llmprod_guardrail_output_fields",
                                    "Fields of generated text the output guardrails scanned, once per answer and "
                                    "field (content, reasoning, tool_call, logprobs, text, ...).",
                                    ["route", "field"], registry=registry)
        self.guard_errors = Counter("llmprod_guardrail_errors",
                                    "Guardrail checks that raised instead of answering; the request failed closed.",
                                    ["stage", "check"], registry=registry)

    def count_usage(self, route: str, usage) -> None:
        """Tokens from an answer's usage (a stream's last usage chunk: vLLM's running totals are not summed)."""
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))  # /v1/responses names them so
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        prompt = prompt if isinstance(prompt, int) and prompt >= 0 else None
        completion = completion if isinstance(completion, int) and completion >= 0 else None
        if prompt is not None:
            self.prompt_tokens.labels(route).inc(prompt)
        if completion is not None:
            self.output_tokens.labels(route).inc(completion)
        client = charge_current(prompt, completion)
        if client is not None:
            self.client_tokens.labels(client).inc((prompt or 0) + (completion or 0))

    def guard_observer(self) -> "GuardMetrics":
        return GuardMetrics(self)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.shared is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, path=self.shared)
        return generate_latest(every_process), CONTENT_TYPE_LATEST


class GuardMetrics:
    """The gateway's GuardObserver (llmprod.guardrails.types): what a guard reports, as Prometheus series."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def finding(self, stage: str, finding) -> None:
        self.metrics.guard_verdicts.labels(stage, finding.check, finding.category, finding.action).inc()

    def latency(self, stage: str, check: str, seconds: float) -> None:
        self.metrics.guard_latency.labels(stage, check).observe(seconds)

    def failure(self, stage: str, check: str) -> None:
        self.metrics.guard_errors.labels(stage, check).inc()
