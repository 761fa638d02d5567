"""Guardrails: policies of deterministic and model-based checks on the input and the streamed output."""

from llmprod.serve.guardrails.policy import BUNDLED, DEFAULT_POLICY, Policy, find_policy, load_policy

__all__ = ["BUNDLED", "DEFAULT_POLICY", "Policy", "find_policy", "load_policy"]
