"""Tool calls from real vLLM through the guarded gateway: greedy decoding, so the same request gives the same
call direct and through `llmprod serve --upstream` (default policy), which must pass it on unchanged, whole
and valid JSON:

    python benchmarks/h200/tools_check.py http://127.0.0.1:8013 --model tiny --out DIR

`tool_choice: required` makes vLLM constrain the output to a call of the given tools (structured outputs),
so a model with random weights still calls one. Records vLLM's own streams (test data) and a report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai

from llmprod.serve.engines import free_port
from llmprod.testing.servers import serve_ready

TOOLS = [{"type": "function", "function": {
    "name": "send_mail", "description": "Send an e-mail.",
    "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
                   "required": ["to", "subject"]}}}]
MESSAGES = [{"role": "user", "content": "Send the report to the team."}]


def call_of(chunks) -> dict:
    """name and arguments of the first tool call, from a stream of chat chunks (dicts)."""
    name, arguments = "", ""
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                name += (call.get("function") or {}).get("name") or ""
                arguments += (call.get("function") or {}).get("arguments") or ""
    return {"name": name, "arguments": arguments}


def sse_json(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("engine")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    engine = args.engine.rstrip("/")
    chat = {"model": args.model, "messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
            "max_tokens": 96, "temperature": 0.0, "stream": True}
    with httpx.stream("POST", f"{engine}/v1/chat/completions", json=chat, timeout=120) as response:
        direct_raw = b"".join(response.iter_bytes())
    (args.out / "vllm-chat-tool-call.sse").write_bytes(direct_raw)
    respond = {"model": args.model, "input": MESSAGES[0]["content"], "tool_choice": "required", "stream": True,
               "tools": [{"type": "function", **TOOLS[0]["function"]}], "max_output_tokens": 96,
               "temperature": 0.0}
    with httpx.stream("POST", f"{engine}/v1/responses", json=respond, timeout=120) as response:
        (args.out / "vllm-responses-tool-call.sse").write_bytes(b"".join(response.iter_bytes()))
    direct = call_of(sse_json(direct_raw))

    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "llmprod", "serve", "--upstream", engine, "--port", str(port),
                              "--guardrails", "default", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    report: dict = {"engine": engine, "direct": direct}
    try:
        serve_ready(serve)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        streamed = client.chat.completions.create(model=args.model, messages=MESSAGES, tools=TOOLS,
                                                  tool_choice="required", max_tokens=96, temperature=0.0, stream=True)
        chunks = [c.model_dump() for c in streamed]
        report["gateway_streamed"] = call_of(chunks)
        whole = client.chat.completions.create(model=args.model, messages=MESSAGES, tools=TOOLS,
                                               tool_choice="required", max_tokens=96, temperature=0.0)
        report["gateway_whole"] = {"message": whole.choices[0].message.model_dump(),
                                   "finish_reason": whole.choices[0].finish_reason}
        direct_whole = httpx.post(f"{engine}/v1/chat/completions", json={**chat, "stream": False}, timeout=120).json()
        report["direct_whole"] = {"message": direct_whole["choices"][0]["message"],
                                  "finish_reason": direct_whole["choices"][0]["finish_reason"]}
        answer = client.responses.create(model=args.model, input=respond["input"], tools=respond["tools"],
                                         tool_choice="required", max_output_tokens=96, temperature=0.0)
        report["gateway_responses"] = [item.model_dump() for item in answer.output if item.type == "function_call"]
        report["metrics"] = [line for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
                             if line.startswith(("llmprod_guardrail_output_fields_total", "llmprod_requests_total"))]
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    try:
        json.loads(report["gateway_streamed"]["arguments"])
        report["arguments_parse"] = True
    except ValueError:
        report["arguments_parse"] = False
    report["same_as_direct"] = report["gateway_streamed"] == direct
    (args.out / "tools-check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("direct", "gateway_streamed", "same_as_direct", "arguments_parse")}))
    return 0 if report["same_as_direct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
