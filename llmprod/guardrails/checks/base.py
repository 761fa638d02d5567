"""What every check type declares, and the two kinds of built check the guard runs.

A check type is data plus a factory: its name, the actions and stages it allows, the schema of its
options, and `build(config, shared) -> check`. The registry (`llmprod.guardrails.registry`) lists the
types; the policy parser validates against their schemas and the guard calls their factories, so adding
a check is one module and one registry line.

Built checks are of two kinds:
- `PatternCheck`: deterministic patterns. The guard runs all of a stage's patterns together (one RE2 set
  pass finds the candidates) and the stream scanner holds back text a pattern could still match.
- a model check (`ModelCheck`): an async verdict on whole texts (Llama Guard, Prompt Guard). The guard
  runs a stage's model checks concurrently; on a stream, every `every_tokens` completion tokens and at
  the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from llmprod.guardrails.detectors import Detector, Pattern
from llmprod.guardrails.types import Finding


@dataclass(frozen=True)
class OptionSpec:
    kind: str  # "str" | "float" | "int" | "bool" | "list[str]" | "patterns"
    choices: tuple[str, ...] = ()
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


@dataclass(frozen=True)
class CheckConfig:
    """One check of a policy, validated: which type, what action on which stage, its options."""

    check: str
    action: str
    stage: str
    options: dict[str, Any]
    line: int


class PatternCheck:
    """A deterministic check: the spans its patterns find (after normalisation) get the check's action."""

    def __init__(self, config: CheckConfig, patterns: Sequence[Pattern]) -> None:
        self.config = config
        self.name = config.check
        self.detector = Detector(patterns)


class ModelCheck(Protocol):
    """A check that scores whole texts with a model (in-process or behind an endpoint)."""

    config: CheckConfig
    name: str

    async def check_input(self, texts: list[str]) -> list[Finding]:
        """The request's user texts (the last one is the turn being judged)."""

    async def check_output(self, text: str, context: str) -> list[Finding]:
        """The answer so far, with the user turn it answers as context."""


class SharedModels:
    """Guard models loaded once per guard and shared by the checks that name the same one (Llama Guard on
    the input and on the output loads one copy)."""

    def __init__(self) -> None:
        self._loaded: dict[tuple, Any] = {}

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = load()
        return self._loaded[key]

    def values(self) -> list[Any]:
        return list(self._loaded.values())


@dataclass(frozen=True)
class CheckType:
    name: str
    summary: str
    actions: tuple[str, ...]
    stages: tuple[str, ...]
    options: dict[str, OptionSpec]
    build: Callable[[CheckConfig, SharedModels], PatternCheck | ModelCheck]
    loads_model: bool = False  # building it loads a model or reaches an endpoint (seconds, not microseconds)
