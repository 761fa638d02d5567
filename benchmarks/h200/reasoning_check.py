"""A reasoning model's reasoning through the guarded gateway, with the official openai client, against a
running vLLM started with --reasoning-parser:

    python benchmarks/h200/reasoning_check.py http://127.0.0.1:8012 --model tiny --out DIR
    python benchmarks/h200/reasoning_check.py --serve MODEL_DIR --vllm-bin /tmp/vbin/vllm --out DIR

Starts `llmprod serve --upstream URL` with the default policy (or, with --serve, `llmprod serve MODEL_DIR
--engine vllm ... -- --reasoning-parser deepseek_r1`: serve starts and supervises vLLM itself), then: chat streamed and whole, responses
streamed and whole. Records what vLLM itself sent for the same requests (raw SSE bytes: test data for the
gateway's scripted engine) and the gateway's /metrics, and says whether the reasoning was scanned
(llmprod_guardrail_output_fields_total{field="reasoning"|"reasoning_text"...}).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from llmprod.serve.engines import free_port
from llmprod.testing.servers import serve_ready


def raw(url: str, path: str, body: dict) -> bytes:
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=120) as response:
        return b"".join(response.iter_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine", nargs="?", help="a running vLLM's URL (or --serve)")
    parser.add_argument("--serve", help="a model directory for `llmprod serve --engine vllm` instead")
    parser.add_argument("--vllm-bin", default="/tmp/vbin/vllm")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    if args.serve:
        target = [args.serve, "--engine", "vllm", "--vllm-bin", args.vllm_bin, "--served-model-name", args.model,
                  "--max-model-len", "2048", "--gpu-memory-utilization", "0.3", "--engine-log",
                  str(args.out / "vllm-under-serve.log")]
        extra = ["--", "--reasoning-parser", "deepseek_r1", "--load-format", "dummy"]
    else:
        target, extra = ["--upstream", args.engine.rstrip("/")], []
    serve = subprocess.Popen([sys.executable, "-m", "llmprod", "serve", *target, "--port", str(port),
                              "--guardrails", "default", "--json", *extra], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    report: dict = {"model": args.model, "ready": serve_ready(serve)}
    engine = report["engine"] = report["ready"]["upstream"]
    chat = {"model": args.model, "messages": [{"role": "user", "content": "Think it over, then answer."}],
            "max_tokens": 48, "ignore_eos": True, "stream": True}
    respond = {"model": args.model, "input": "Think it over, then answer.", "max_output_tokens": 48,
               "stream": True}
    (args.out / "vllm-chat-reasoning.sse").write_bytes(raw(engine, "/v1/chat/completions", chat))
    (args.out / "vllm-responses-reasoning.sse").write_bytes(raw(engine, "/v1/responses", respond))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        started = time.perf_counter()
        reasoning, content = [], []
        for chunk in client.chat.completions.create(model=args.model, messages=chat["messages"], max_tokens=48,
                                                    stream=True, extra_body={"ignore_eos": True}):
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                reasoning.append(extra.get("reasoning") or extra.get("reasoning_content") or "")
                content.append(choice.delta.content or "")
        report["chat_streamed"] = {"reasoning_chars": len("".join(reasoning)), "content_chars": len("".join(content)),
                                   "reasoning_head": "".join(reasoning)[:120], "seconds": time.perf_counter() - started}
        whole = client.chat.completions.create(model=args.model, messages=chat["messages"], max_tokens=48,
                                               extra_body={"ignore_eos": True})
        message = whole.choices[0].message.model_extra or {}
        report["chat_whole"] = {"reasoning_chars": len(message.get("reasoning") or ""),
                                "finish_reason": whole.choices[0].finish_reason}
        kinds: dict[str, int] = {}
        thinking = []
        with client.responses.create(model=args.model, input=respond["input"], max_output_tokens=48,
                                     stream=True) as stream:
            for event in stream:
                kinds[event.type] = kinds.get(event.type, 0) + 1
                if event.type == "response.reasoning_text.delta":
                    thinking.append(event.delta)
        report["responses_streamed"] = {"events": kinds, "reasoning_chars": len("".join(thinking))}
        answer = client.responses.create(model=args.model, input=respond["input"], max_output_tokens=48)
        report["responses_whole"] = {"status": answer.status, "items": [item.type for item in answer.output]}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        report["metrics"] = [line for line in metrics.splitlines()
                             if line.startswith(("llmprod_guardrail_output_fields_total", "llmprod_requests_total",
                                                 "llmprod_guardrail_latency_seconds_count"))]
        report["reasoning_scanned"] = any('field="reasoning' in line for line in report["metrics"])
    finally:
        serve.terminate()
        report["serve_exit"] = serve.wait(timeout=120)
    (args.out / "reasoning-check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("chat_streamed", "responses_streamed", "reasoning_scanned", "serve_exit")}))
    return 0 if report["reasoning_scanned"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
