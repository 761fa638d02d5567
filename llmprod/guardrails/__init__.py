"""Guardrails: policies of deterministic and model-based checks on an LLM's input and streamed output.

    policy.py     YAML → Policy (validated against the registry, mistakes reported with their line)
    registry.py   every check type: name → options schema → factory → stages (checks/ holds them)
    guard.py      PolicyGuard: a policy with every check built; what `serve` and `guardrails scan` run
    stream.py     the output scanner: incremental, with a hold-back just long enough for no partial match
    detectors.py  RE2 patterns and validators; normalize.py: text folded before matching
    types.py      findings, decisions, the observer interface, the Guard protocol the gateway uses

Nothing here imports `llmprod.serve`: the gateway uses a guard, not the other way round.
"""

from llmprod.guardrails.guard import PolicyGuard, load_guard
from llmprod.guardrails.policy import BUNDLED, DEFAULT_POLICY, Policy, find_policy, load_policy

__all__ = ["BUNDLED", "DEFAULT_POLICY", "Policy", "PolicyGuard", "find_policy", "load_guard", "load_policy"]
