"""Check types: one module each (or one module for a family), listed in `llmprod.guardrails.registry`."""
