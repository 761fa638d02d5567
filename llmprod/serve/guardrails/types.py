"""What a guardrail check reports, and the interface the gateway calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

ACTIONS = ("flag", "redact", "block")
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
    categories: tuple[str, ...] = ()
    verbatim: bool = False  # `text` is exactly what this feed received: nothing held, nothing rewritten


class OutputStream(Protocol):
    async def feed(self, text: str) -> StreamStep: ...

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

    async def check_input(self, texts: list[str]) -> Decision: ...

    async def check_output(self, text: str, context: str) -> Decision: ...

    def output_stream(self, context: str) -> OutputStream: ...
