"""An OpenAI-compatible server of a local causal LM that answers /v1/completions with top logprobs, the way
vLLM serves a Llama Guard model: the stand-in for a guard `endpoint:` where vLLM cannot run.

It implements what llmprod's `llama_guard` check asks of an endpoint (greedy completions of a prompt,
`logprobs: K` top logprobs per generated position with decoded token strings, vLLM's
`add_special_tokens`), not the whole API. `transformers serve` cannot take this role: its handlers refuse
`logprobs`.

    python -m llmprod.testing.guard_endpoint MODEL_DIR --port 8011 [--served-model-name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import time


def make_app(model_dir: str, served_name: str | None = None):
    import torch
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = served_name or model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    stats = {"completions": 0}

    def complete(prompt: str, max_tokens: int, top_k: int, add_special_tokens: bool) -> dict:
        ids = tokenizer(prompt, add_special_tokens=add_special_tokens, return_tensors="pt").input_ids
        prompt_tokens = int(ids.shape[1])
        tokens, token_logprobs, top_logprobs, generated = [], [], [], []
        with torch.inference_mode():
            for _ in range(max_tokens):
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
                best = torch.topk(logprobs, top_k)
                chosen = int(best.indices[0])
                tokens.append(tokenizer.decode([chosen]))
                token_logprobs.append(float(best.values[0]))
                top = {}
                for value, index in zip(best.values.tolist(), best.indices.tolist()):
                    top.setdefault(tokenizer.decode([index]), value)  # decoded strings can collide, as in vLLM
                top_logprobs.append(top)
                generated.append(chosen)
                if chosen == tokenizer.eos_token_id:
                    break
                ids = torch.cat([ids, torch.tensor([[chosen]])], dim=1)
        return {"text": tokenizer.decode(generated, skip_special_tokens=True),
                "logprobs": {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs},
                "prompt_tokens": prompt_tokens, "completion_tokens": len(generated)}

    async def completions(request: Request):
        body = await request.json()
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return JSONResponse({"error": {"message": "`prompt` must be a string", "type": "invalid_request_error",
                                           "code": "invalid_prompt"}}, status_code=400)
        if body.get("model") not in (None, name):
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} does not exist",
                                           "type": "NotFoundError", "code": 404}}, status_code=404)
        stats["completions"] += 1
        answer = await asyncio.to_thread(complete, prompt, min(int(body.get("max_tokens") or 16), 64),
                                         max(1, min(int(body.get("logprobs") or 1), 20)),
                                         bool(body.get("add_special_tokens", True)))
        choice = {"index": 0, "text": answer["text"], "logprobs": answer["logprobs"], "finish_reason": "length"}
        usage = {"prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"],
                 "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"]}
        return JSONResponse({"id": f"cmpl-{stats['completions']}", "object": "text_completion",
                             "created": int(time.time()), "model": name, "choices": [choice], "usage": usage})

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "llmprod"}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def stats_route(request: Request):
        return JSONResponse(stats)

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models),
                             Route("/health", health), Route("/stats", stats_route)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.model, args.served_model_name), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
