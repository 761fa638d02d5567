"""`llmprod deploy`: the plan llmprod measured, rendered as a guarded vLLM fleet for Kubernetes."""
