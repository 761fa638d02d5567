"""What a guardrail check reports, what observes it, and the interface the gateway calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

ACTIONS = ("flag", "redact", "block")
STAGES = ("input", "output")
# A text's verdict is its strongest action; "allow" when nothing was found.
SEVERITY = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


@dataclass(frozen=True)
class Finding:
    check: str  # e.g. "pii", "secrets", "injection", "llama_guard"
    category: str  # e.g. "email", "aws_access_key", "S1"
    start: int  # span in the original text (0, 0 for whole-text verdicts of a model)
    end: int
    action: str  # "flag" | "redact" | "block"
    score: float | None = None

    def as_dict(self) -> dict:
        data = {"check": self.check, "category": self.category, "start": self.start, "end": self.end,
                "action": self.action}
        if self.score is not None:
            data["score"] = round(self.score, 4)
        return data


def verdict_of(findings: Sequence[Finding]) -> str:
    return max((f.action for f in findings), key=SEVERITY.__getitem__, default="allow")


@dataclass
class Decision:
    """The outcome for a group of texts (a request's messages, or one generated answer)."""

    texts: list[str]  # redacted where a redact action applied, else unchanged
    findings: list[Finding] = field(default_factory=list)  # all texts', in order

    @property
    def verdict(self) -> str:
        return verdict_of(self.findings)

    @property
    def blocked(self) -> bool:
        return self.verdict == "block"

    @property
    def categories(self) -> list[str]:
        return sorted({f.category for f in self.findings if f.action == "block"})


@dataclass
class StreamStep:
    text: str  # what may be sent to the client now
    blocked: bool = False
    verbatim: bool = False  # `text` is exactly what this feed received: nothing held, nothing rewritten
    # Where a redaction changed the released text: the text as generated, and the redact findings applied to
    # it (spans in `source`). Whoever mirrors the text elsewhere (logprob tokens) maps the same change there.
    source: str | None = None
    redactions: tuple = ()


class CheckUnavailable(Exception):
    """A check could not give a verdict (its model endpoint went away, the model raised). The guard fails
    closed: the gateway answers 503 instead of letting the text through unchecked."""

    def __init__(self, stage: str, check: str, cause: BaseException) -> None:
        super().__init__(f"the {check} check on the {stage} failed ({type(cause).__name__})")
        self.stage, self.check, self.cause = stage, check, cause


class GuardObserver(Protocol):
    """What a guard reports as it works: the gateway's metrics implement it, `guardrails scan` sums it."""

    def finding(self, stage: str, finding: Finding) -> None:
        """A finding that led to its check's action (counted once per text it was found in)."""

    def latency(self, stage: str, check: str, seconds: float) -> None:
        """One check's time for one request (a stream's chunks summed)."""

    def failure(self, stage: str, check: str) -> None:
        """A check raised instead of answering (see CheckUnavailable)."""


class NullObserver:
    def finding(self, stage: str, finding: Finding) -> None:
        pass

    def latency(self, stage: str, check: str, seconds: float) -> None:
        pass

    def failure(self, stage: str, check: str) -> None:
        pass


class OutputStream(Protocol):
    async def feed(self, text: str, tokens: int = 1) -> StreamStep:
        """`text` generated next, made of `tokens` completion tokens."""

    async def finish(self) -> StreamStep: ...

    def close(self) -> None:
        """The stream ended (finished, blocked, or the client left)."""


class Guard(Protocol):
    """The gateway's view of a loaded policy."""

    name: str

    @property
    def has_input_checks(self) -> bool: ...

    @property
    def has_output_checks(self) -> bool: ...

    def describe(self) -> list[str]: ...

    async def check_input(self, texts: list[str], model_texts: list[str] | None = None) -> Decision: ...

    # Optional (the gateway falls back to check_input without them): `input_mode` "parallel" | "before", and
    # start_input(texts, model_texts) -> (the deterministic Decision, a task of the whole Decision or None).

    async def check_output(self, text: str, context: str) -> Decision: ...

    def output_stream(self, context: str) -> OutputStream: ...
