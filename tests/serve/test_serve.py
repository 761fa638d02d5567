"""`llmprod serve` as users run it: engine choice and command lines, supervision, bad input, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmprod.errors import InputError
from llmprod.serve.engines import (
    EngineCommand,
    EngineOptions,
    EngineProcess,
    Supervisor,
    UpstreamState,
    choose_engine,
    transformers_command,
    vllm_command,
)
from llmprod.testing.servers import free_port, wait_until


def test_engine_choice_says_why():
    assert choose_engine("auto", None, True)[0] == "transformers"
    assert "not found" in choose_engine("auto", None, True)[1]
    assert choose_engine("auto", "/x/vllm", False) == ("transformers", "vLLM was found (/x/vllm) but no GPU is visible")
    assert choose_engine("auto", "/x/vllm", True)[0] == "vllm"
    assert choose_engine("transformers", "/x/vllm", True)[0] == "transformers"
    with pytest.raises(InputError, match="no `vllm` on PATH"):
        choose_engine("vllm", None, True)


def test_vllm_command_line_binds_loopback_and_passes_flags_through():
    options = EngineOptions(max_model_len=8192, gpu_memory_utilization=0.85, kv_cache_dtype="fp8",
                            tensor_parallel_size=2, extra_args=("--enable-prefix-caching",))
    command = vllm_command("/venv/bin/vllm", "./llama-gptq", "llama", 41000, options, "test")
    assert command.argv == ("/venv/bin/vllm", "serve", "./llama-gptq", "--host", "127.0.0.1", "--port", "41000",
                            "--served-model-name", "llama", "--max-model-len", "8192",
                            "--gpu-memory-utilization", "0.85", "--kv-cache-dtype", "fp8",
                            "--tensor-parallel-size", "2", "--enable-prefix-caching")
    assert "--quantization" not in command.argv  # vLLM reads it from the checkpoint
    assert command.base_url == "http://127.0.0.1:41000"


def test_transformers_command_refuses_vllm_only_flags(tmp_path):
    command = transformers_command("./tiny", 41001, EngineOptions(), "test", cache_dir=tmp_path / "cache")
    assert command.argv[1:5] == ("-m", "transformers.cli.transformers", "serve", "./tiny")
    assert "--continuous-batching" in command.argv and "127.0.0.1" in command.argv
    assert (tmp_path / "cache").is_dir() and command.env["HF_HUB_CACHE"] == str(tmp_path / "cache")
    assert "--cb-max-memory-percent" not in command.argv  # on a GPU transformers sizes its own cache
    on_cpu = transformers_command("./tiny", 41001, EngineOptions(), "test", on_gpu=False)
    assert on_cpu.argv[-2:] == ("--cb-max-memory-percent", "0.05")
    mine = transformers_command("./tiny", 41001, EngineOptions(extra_args=("--cb-num-blocks", "64")), "test",
                                on_gpu=False)
    assert "--cb-max-memory-percent" not in mine.argv and mine.argv[-2:] == ("--cb-num-blocks", "64")
    with pytest.raises(InputError, match="--gpu-memory-utilization only apply to the vLLM engine"):
        transformers_command("./tiny", 1, EngineOptions(gpu_memory_utilization=0.5), "test")


def fake_engine_command(port: int) -> EngineCommand:
    return EngineCommand("vllm", (sys.executable, "-m", "llmprod.testing.fake_engine", "--port", str(port),
                                  "--spawn-child"), port, "fake", "test")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_restarts_a_dead_engine_and_stop_kills_the_whole_group(tmp_path, start_gateway):
    port = free_port()
    engine = EngineProcess(fake_engine_command(port), tmp_path / "engine.log")
    state = UpstreamState(f"http://127.0.0.1:{port}", supervised=True)
    events = []

    async def scenario():
        async with httpx.AsyncClient() as client:
            engine.start()
            await engine.wait_ready(30, client)
            first_pid = engine.pid
            supervisor = Supervisor(engine, state, 30, on_event=events.append, backoff=(0.2,))
            task = asyncio.ensure_future(supervisor.run(client))
            os.killpg(first_pid, signal.SIGKILL)  # the engine dies
            deadline = time.monotonic() + 30
            while state.up and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert not state.up and "restarted" in state.reason
            while not state.up and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            supervisor.stopping = True
            task.cancel()
            return first_pid

    first_pid = asyncio.run(scenario())
    assert state.up and engine.pid != first_pid and engine.starts == 2
    assert any("restarting" in e for e in events) and any("is back" in e for e in events)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    pgid = engine.pid
    engine.stop(grace=5)
    assert not group_alive(pgid)  # the child it spawned is gone too
    assert "starting vllm engine" in (tmp_path / "engine.log").read_text()


def test_engine_that_exits_early_names_its_log(tmp_path):
    command = EngineCommand("vllm", (sys.executable, "-c", "import sys; print('CUDA out of memory'); sys.exit(1)"),
                            free_port(), "x", "test")
    engine = EngineProcess(command, tmp_path / "engine.log")

    async def go():
        async with httpx.AsyncClient() as client:
            engine.start()
            await engine.wait_ready(30, client)

    from llmprod.serve.engines import EngineFailed

    with pytest.raises(EngineFailed) as err:
        asyncio.run(go())
    line = err.value.one_line()
    assert "exited with code 1" in line and str(tmp_path / "engine.log") in line and "CUDA out of memory" in line


# -- the command --------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_vllm(tmp_path) -> Path:
    """A `vllm` executable that runs the fake engine (vLLM itself cannot run here)."""
    script = tmp_path / "bin" / "vllm"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m llmprod.testing.fake_engine \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("args,words", [
    (["./m", "--upstream", "http://x:1"], "not both"),
    ([], "no model to serve"),
    (["./m", "--max-body-size", "lots"], "is not a size"),
    (["./m", "--port", "70000"], "not a TCP port"),
    (["./m", "--max-concurrency", "0"], "at least 1"),
    (["./m", "--gpu-memory-utilization", "1.5"], "not in (0, 1]"),
    (["./m", "--guardrails", "nope"], "no guardrail policy nope"),
    (["./m", "--guardrails", "default", "--no-guardrails"], "contradict"),
    (["./m", "--engine", "transformers", "--kv-cache-dtype", "fp8"], "only apply to the vLLM engine"),
    (["./m", "--engine", "vllm", "--vllm-bin", "/nonexistent/vllm"], "not an executable"),
    (["--upstream", "ftp://host"], "not an http(s) URL"),
])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(cli, args, words):
    result = cli("serve", *args, "--port", str(free_port())) if "--port" not in args else cli("serve", *args)
    assert result.exit_code == 2, result.stderr
    assert words in " ".join(result.stderr.split())
    assert "starting" not in result.stderr


def test_port_in_use_is_exit_2(cli):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("serve", "./m", "--port", str(port))
    assert result.exit_code == 2 and "cannot listen" in result.stderr


def test_unreachable_upstream_is_exit_2(cli):
    result = cli("serve", "--upstream", f"http://127.0.0.1:{free_port()}", "--port", str(free_port()))
    assert result.exit_code == 2 and "not reachable" in result.stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_with_a_vllm_binary_then_signal_stops_everything(serve_process, fake_vllm, tmp_path, sig):
    pid_file = tmp_path / "child.pid"
    port = free_port()
    proc, ready = serve_process("./some-model", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(port),
                              "--api-key", "k", "--engine-log", str(tmp_path / "e.log"), "--", "--enforce-eager",
                              env={"FAKE_ENGINE_CHILD_PID_FILE": str(pid_file)})
    try:
        assert ready["engine"] == "vllm" and ready["models"] == ["./some-model"]
        assert ready["url"] == f"http://127.0.0.1:{port}/v1"
        c = openai.OpenAI(base_url=ready["url"], api_key="k", max_retries=0)
        assert c.chat.completions.create(model="./some-model",
                                         messages=[{"role": "user", "content": "echo"}]).choices[0].message.content == "echo"
        # A stream in flight when the signal comes is allowed to finish (grace period).
        body = {"model": "./some-model", "stream": True, "messages": [{"role": "user", "content": "chunks:a|b|c"}]}
        assert "--enforce-eager" in (tmp_path / "e.log").read_text()  # flags after -- reach the engine
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
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists() or
                   Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_transformers_serve_engine_with_the_official_client(serve_process, tiny_model_dir, tmp_path):
    """The real embedded engine on the tiny model: chat, completions, streaming, models, metrics."""
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
        metrics = httpx.get(ready["metrics_url"]).text
        assert 'llmprod_requests_total{route="chat",status="200"} 2.0' in metrics
        assert 'llmprod_time_to_first_token_seconds_count{route="chat"} 1.0' in metrics
        assert "llmprod_output_tokens_total" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not Path(f"/proc/{ready['engine_pid']}").exists() or \
        Path(f"/proc/{ready['engine_pid']}/stat").read_text().split()[2] == "Z"
