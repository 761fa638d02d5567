"""GPU memory planning as vLLM allocates it: weights, PagedAttention KV blocks, overheads.

Pure arithmetic over config.json (and safetensors headers when present): no torch, answers in
milliseconds. `plan.estimate()` is the entry point.
"""
