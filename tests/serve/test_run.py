"""`llmprod serve` as users run it: bad input, a vLLM binary started and stopped by signal, the real
transformers engine with the official client."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import openai
import pytest

from llmprod.testing.servers import free_port, running, wait_until

VLLM_LOGS = Path(__file__).resolve().parents[1] / "data" / "vllm-0.26.0"
VLLM_LOG = VLLM_LOGS / "llama-3.1-8b-bf16.log"


@pytest.mark.parametrize("args,words", [
    (["./m", "--upstream", "http://x:1"], "not both"),
    ([], "no model to serve"),
    (["./m", "--max-body-size", "lots"], "is not a size"),
    (["./m", "--port", "70000"], "'--port': must be at most 65535; got '70000'"),
    (["./m", "--max-concurrency", "0"], "at least 1"),
    (["./m", "--gpu-memory-utilization", "1.5"], "must be at most 1; got '1.5'"),
    (["/no/such/dir"], "model '/no/such/dir' not found"),
    (["org/model"], "HF_HUB_OFFLINE"),  # the tests run offline: a hub id not in the cache
    (["./m", "--guardrails", "nope"], "no guardrail policy nope"),
    (["./m", "--guardrails", "default", "--no-guardrails"], "contradict"),
    (["./m", "--engine", "transformers", "--kv-cache-dtype", "fp8"], "only apply to the vLLM engine"),
    (["./m", "--engine", "vllm", "--vllm-bin", "/nonexistent/vllm"], "not an executable"),
    (["--upstream", "ftp://host"], "not an http(s) URL"),
])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(cli, args, words, model_dirs):
    result = cli("serve", *args, "--port", str(free_port())) if "--port" not in args else cli("serve", *args)
    assert result.exit_code == 2, result.stderr
    assert words in " ".join(result.stderr.split())
    assert "starting" not in result.stderr


def test_port_in_use_is_exit_2(cli, model_dirs):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("serve", "./m", "--port", str(port))
    assert result.exit_code == 2 and "cannot listen" in result.stderr


def test_a_start_vllm_refuses_is_exit_2_with_its_reason_not_a_timeout(cli, fake_vllm, tmp_path, monkeypatch,
                                                                      model_dirs):
    # a real refusal (vLLM 0.26.0 on an H200: the default max_model_len in 3% of the GPU), replayed
    monkeypatch.setenv("FAKE_VLLM_STARTUP_LOG", str(VLLM_LOGS / "llama-3.2-1b-refused-util0.03.log"))
    monkeypatch.setenv("FAKE_VLLM_EXIT_CODE", "1")
    result = cli("serve", "./m", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(free_port()),
                 "--engine-log", str(tmp_path / "e.log"), "--engine-timeout", "600")
    assert result.exit_code == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "vLLM refused to start: ValueError: To serve at least one request" in message
    assert "serve with --max-model-len 37712 or less" in message and str(tmp_path / "e.log") in message


def test_unreachable_upstream_is_exit_2(cli):
    result = cli("serve", "--upstream", f"http://127.0.0.1:{free_port()}", "--port", str(free_port()))
    assert result.exit_code == 2 and "not reachable" in result.stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_a_vllm_binary_then_signal_stops_everything(serve_process, fake_vllm, tmp_path, sig, model_dirs):
    pid_file = tmp_path / "child.pid"
    port = free_port()
    proc, ready = serve_process("./some-model", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(port),
                              "--api-key", "k", "--engine-log", str(tmp_path / "e.log"), "-dp", "2", "--", "--enforce-eager",
                              env={"FAKE_ENGINE_CHILD_PID_FILE": str(pid_file), "FAKE_VLLM_STARTUP_LOG": str(VLLM_LOG)})
    try:
        assert ready["engine"] == "vllm" and ready["models"] == ["./some-model"]
        # vLLM's own release and memory figures, read from its start-up lines (here a recorded real start)
        assert ready["engine_version"] == "0.26.0"
        assert ready["engine_startup"]["kv_cache_tokens"] == 919_824
        assert ready["engine_startup"]["max_concurrency"] == 7.02
        assert ready["url"] == f"http://127.0.0.1:{port}/v1"
        c = openai.OpenAI(base_url=ready["url"], api_key="k", max_retries=0)
        assert c.chat.completions.create(model="./some-model",
                                         messages=[{"role": "user", "content": "echo"}]).choices[0].message.content == "echo"
        # A stream in flight when the signal comes is allowed to finish (grace period).
        body = {"model": "./some-model", "stream": True, "messages": [{"role": "user", "content": "chunks:a|b|c"}]}
        assert "--enforce-eager" in (tmp_path / "e.log").read_text()  # flags after -- reach the engine
        # vLLM's data parallelism (issue #33): one engine process group to supervise, ranks behind one port
        assert "--data-parallel-size 2" in (tmp_path / "e.log").read_text()
        engine_pid = ready["engine_pid"]
        child_pid = int(pid_file.read_text())
        with httpx.stream("POST", f"{ready['url']}/chat/completions", json=body,
                          headers={"Authorization": "Bearer k"}, timeout=30) as response:
            proc.send_signal(sig)
            lines = [line for line in response.iter_lines() if line.startswith("data:")]
        assert lines[-1] == "data: [DONE]"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert "engine stopped" in stderr
    assert proc.stdout.read() == ""  # exactly one JSON document on stdout
    for pid in (engine_pid, child_pid):
        wait_until(lambda pid=pid: not running(pid), timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_transformers_serve_engine_with_the_official_client(serve_process, tiny_model_dir, tmp_path):
    """The real embedded engine on the tiny model: chat, completions, responses, streaming, models, metrics."""
    port = free_port()
    proc, ready = serve_process(str(tiny_model_dir), "--engine", "transformers", "--port", str(port),
                              "--engine-log", str(tmp_path / "engine.log"))
    try:
        assert ready["engine"] == "transformers"
        c = openai.OpenAI(base_url=ready["url"], api_key="unused", max_retries=0, timeout=120)
        name = str(tiny_model_dir)
        assert [m.id for m in c.models.list().data] == [name]
        chat = c.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=8)
        assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
        done = c.completions.create(model=name, prompt="The module", max_tokens=6)
        assert done.choices[0].text
        pieces = [ch.choices[0].delta.content for ch in c.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True) if ch.choices]
        assert len([p for p in pieces if p]) >= 2
        # /v1/responses, whole (the engine's own default is streamed: the gateway says which) and streamed
        answer = c.responses.create(model=name, input="Hello", max_output_tokens=8)
        assert answer.status == "completed" and answer.output_text
        with c.responses.create(model=name, input="Hi", max_output_tokens=8, stream=True) as stream:
            events = list(stream)
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
            events[-1].response.output_text
        metrics = httpx.get(ready["metrics_url"]).text
        assert 'llmprod_requests_total{route="responses",status="200"} 2.0' in metrics
        assert 'llmprod_guardrail_output_fields_total{field="text",route="responses"} 2.0' in metrics
        assert 'llmprod_requests_total{route="chat",status="200"} 2.0' in metrics
        assert 'llmprod_time_to_first_token_seconds_count{route="chat"} 1.0' in metrics
        assert "llmprod_output_tokens_total" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not running(ready["engine_pid"])
