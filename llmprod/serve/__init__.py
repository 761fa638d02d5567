"""`llmprod serve`: an engine process (vLLM or transformers serve) behind a guarded OpenAI-compatible gateway."""
