"""A scriptable OpenAI-compatible engine for the gateway's fault tests (a real HTTP server on loopback).

Behaviour is set per request through the last user message / prompt (or a system message, which input
guardrails do not check, so a test can script the answer to any user text), so one server serves every test:
    "echo"             answers with the (possibly redacted) user text it received
    "slow:SECONDS"     waits that long before answering (timeouts, 429 under load)
    "chunks:A|B|C"     streams exactly those text chunks (guardrail chunk-boundary tests)
    "packed:A|B|C"     the same events, all in one write (a fast engine's many tokens in one network read)
    "crash"            exits the process (supervision tests)
    "enginedead"       answers 500 as vLLM does for the requests in flight when its EngineCore dies
    anything else      `tokens` tokens "t0 t1 ..." with `itl` seconds between them
GET /stats: generation requests seen, streams cancelled by the client, the last body received.

As a stand-in `vllm serve DIR` (vllm_executable): a directory whose name says "guard" and holds a model is
served by llmprod.testing.guard_endpoint instead, scoring Llama Guard prompts with the real (tiny) model.

As a script it is also a stand-in for `vllm serve MODEL --host H --port P ...` (extra flags ignored) and
`vllm --version` (FAKE_VLLM_VERSION); it replays a recorded vLLM start-up into its output
(FAKE_VLLM_STARTUP_LOG), exits with FAKE_VLLM_EXIT_CODE after it when set (a refused start), and it can
spawn a child process so tests can check that stopping the engine stops its whole group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from llmprod.testing import texts

WORDS = ("the ", "model ", "writes ", "plain ", "prose ", "about ", "serving ", "and ", "latency ", "of ",
         "tokens ", "with ", "no ", "numbers ", "in ", "it ")


def make_app(tokens: int = 8, itl: float = 0.0, model: str = "fake", words: bool = False,
             text: str | None = None, logprobs_model: str | None = None,
             max_model_len: int | None = None) -> Starlette:
    """`text`: a kind of llmprod.testing.texts (prose, runs, code, json, base64) for the default answer;
    `words`: plain words without digits; else "t0 t1 ...". `logprobs_model`: a model directory whose
    float32 log-probabilities answer vLLM's `prompt_logprobs` on a prompt of token ids (without it the
    field is absent from answers, as from servers that do not support it). `max_model_len`: a prompt of token
    ids plus max_tokens longer than this is refused with vLLM's 400."""
    scorer = _PromptScorer(logprobs_model) if logprobs_model else None
    stats = {"generations": 0, "cancelled": 0, "completed": 0, "last_body": None}
    text_kind = text

    def instruction(body: dict, chat: bool) -> str:
        if chat:
            messages = body.get("messages", [])
            users = ([m for m in messages if m.get("role") == "system"]
                     or [m for m in messages if m.get("role") == "user"])
            content = users[-1]["content"] if users else ""
            return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))

    async def generate(request: Request):
        body = await request.json()
        stats["generations"] += 1
        stats["last_body"] = body
        chat = request.url.path.endswith("/chat/completions")
        text = instruction(body, chat)
        if text == "crash":
            os._exit(3)
        if text == "enginedead":  # vLLM 0.26.0's body for EngineDeadError
            return JSONResponse({"error": {"message": "EngineCore encountered an issue. See stack trace (above) "
                                           "for the root cause.", "type": "InternalServerError", "param": None,
                                           "code": 500}}, status_code=500)
        if text.startswith("slow:"):
            await asyncio.sleep(float(text.split(":", 1)[1]))
        if text == "echo":
            pieces = [text]
        elif text.startswith("echo:"):
            pieces = [text[5:]]
        elif text.startswith(("chunks:", "packed:")):
            pieces = text[7:].split("|")
        else:
            n = min(tokens, int(body.get("max_tokens") or tokens))
            if text_kind is not None:
                pieces = texts.tokens(text_kind, n, seed=stats["generations"])
            else:
                pieces = [WORDS[i % len(WORDS)] if words else f"t{i} " for i in range(n)]
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(pieces),
                 "total_tokens": len(text.split()) + len(pieces)}
        if not body.get("stream"):
            content = "".join(pieces)
            prompt = body.get("prompt")
            if max_model_len is not None:  # vLLM 0.26.0's check and message
                ids = len(prompt) if isinstance(prompt, list) else 0
                wanted = ids + int(body.get("max_tokens") or 16)
                if wanted > max_model_len:
                    return JSONResponse({"error": {
                        "message": f"This model's maximum context length is {max_model_len} tokens. However, you "
                                   f"requested {body.get('max_tokens')} output tokens and your prompt contains at "
                                   f"least {ids} input tokens, for a total of at least {wanted} tokens.",
                        "type": "BadRequestError", "param": None, "code": 400}}, status_code=400)
            if (not chat and body.get("prompt_logprobs") is not None and scorer is not None and isinstance(prompt, list)
                    and all(isinstance(t, int) for t in prompt)):
                stats["completed"] += 1
                return JSONResponse({"id": "fake-1", "object": "text_completion", "model": body.get("model"),
                                     "choices": [{"index": 0, "text": content[:8], "finish_reason": "length",
                                                  "prompt_logprobs": scorer(prompt)}],
                                     "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1,
                                               "total_tokens": len(prompt) + 1}})
            choice = ({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": content, "finish_reason": "stop"})
            stats["completed"] += 1
            return JSONResponse({"id": "fake-1", "object": "chat.completion" if chat else "text_completion",
                                 "created": int(time.time()), "model": body.get("model"), "choices": [choice],
                                 "usage": usage})

        async def packed():
            whole = [event async for event in events()]
            yield "".join(whole)

        async def events():
            try:
                for i, piece in enumerate(pieces):
                    if i and itl:
                        await asyncio.sleep(itl)
                    choice = ({"index": 0, "delta": {"content": piece}, "finish_reason": None} if chat
                              else {"index": 0, "text": piece, "finish_reason": None})
                    yield "data: " + json.dumps({"id": "fake-1", "object": "chat.completion.chunk",
                                                 "model": body.get("model"), "choices": [choice]}) + "\n\n"
                final = ({"index": 0, "delta": {}, "finish_reason": "stop"} if chat
                         else {"index": 0, "text": "", "finish_reason": "stop"})
                yield "data: " + json.dumps({"id": "fake-1", "choices": [final]}) + "\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + json.dumps({"id": "fake-1", "choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"
                stats["completed"] += 1
            except (asyncio.CancelledError, GeneratorExit):
                stats["cancelled"] += 1
                raise

        return StreamingResponse(packed() if text.startswith("packed:") else events(), media_type="text/event-stream")

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def stats_route(request: Request):
        return JSONResponse(stats)

    return Starlette(routes=[
        Route("/v1/chat/completions", generate, methods=["POST"]),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/v1/models", models),
        Route("/health", health),
        Route("/stats", stats_route),
    ])


class _PromptScorer:
    """vLLM's prompt_logprobs (k = 0) for a prompt of token ids, from a local model in float32."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def __call__(self, ids: list[int]) -> list:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return [None] + [{str(ids[i]): {"logprob": float(logprobs[i - 1, ids[i]]), "rank": 1, "decoded_token": ""}}
                         for i in range(1, len(ids))]


def vllm_executable(directory: Path, *args: str) -> Path:
    """DIRECTORY/bin/vllm: an executable that runs this fake engine wherever serve would run `vllm` (vLLM
    itself needs a GPU); `args` follow the ones serve passes (--tokens 24, --itl 0.01, ...)."""
    import shlex
    import stat

    script = directory / "bin" / "vllm"
    script.parent.mkdir(parents=True, exist_ok=True)
    extra = "".join(f" {shlex.quote(a)}" for a in args)
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m llmprod.testing.fake_engine \"$@\"{extra}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def stats(url: str) -> dict:
    """GET /stats of a running fake engine."""
    import httpx

    return httpx.get(f"{url}/stats", timeout=5).json()


def main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:  # as `vllm --version`
        print(os.environ.get("FAKE_VLLM_VERSION", "0.26.0"))
        return
    startup = os.environ.get("FAKE_VLLM_STARTUP_LOG")
    if startup:  # a recorded vLLM start-up, replayed into the engine log
        print(Path(startup).read_text(encoding="utf-8"), flush=True)
    if os.environ.get("FAKE_VLLM_EXIT_CODE"):  # ... of a start that vLLM refused
        sys.exit(int(os.environ["FAKE_VLLM_EXIT_CODE"]))
    if argv and argv[0] == "serve":  # invoked as a fake `vllm serve MODEL ...`
        argv = argv[1:]
        model = argv.pop(0)
    else:
        model = "fake"
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--itl", type=float, default=0.0)
    parser.add_argument("--words", action="store_true", help="stream plain words instead of t0 t1 ...")
    parser.add_argument("--text", choices=texts.KINDS, help="stream generated text of this kind")
    parser.add_argument("--spawn-child", action="store_true", help="start a sleeping child in the same group")
    parser.add_argument("--logprobs-model", default=None, help="a model directory that answers prompt_logprobs")
    parser.add_argument("--child-pid-file", default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    args, _unknown = parser.parse_known_args(argv)
    if "guard" in Path(model).name.lower() and Path(model, "config.json").is_file():
        # a guard model, as `serve` starts vLLM for a policy's Llama Guard: scored for real (guard_endpoint)
        import uvicorn

        from llmprod.testing.guard_endpoint import make_app as guard_app

        uvicorn.run(guard_app(model, args.served_model_name), host=args.host, port=args.port, log_level="warning")
        return
    if args.spawn_child or os.environ.get("FAKE_ENGINE_CHILD_PID_FILE"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pid_file = args.child_pid_file or os.environ.get("FAKE_ENGINE_CHILD_PID_FILE")
        if pid_file:
            with open(pid_file, "w") as fh:
                fh.write(str(child.pid))
    import uvicorn

    uvicorn.run(make_app(args.tokens, args.itl, args.served_model_name or model, args.words, args.text,
                         args.logprobs_model, args.max_model_len), host=args.host,
                port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
