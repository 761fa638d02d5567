"""Test doubles for llmprod and for pipelines that test against it, on loopback, with no GPU:

    fake_engine     a scripted OpenAI-compatible engine; also a stand-in `vllm serve` executable
                    (`python -m llmprod.testing.fake_engine serve MODEL --port P`)
    guard_endpoint  an OpenAI-compatible server of a local causal LM that answers completions with
                    first-token logprobs, the way vLLM serves a Llama Guard model
    servers         ThreadServer (an ASGI app on a free loopback port, in a thread), free_port, wait_until

They need the `serve` extra (Starlette, uvicorn).
"""
