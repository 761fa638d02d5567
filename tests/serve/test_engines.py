"""The engine behind the gateway: which one and why, its command line, readiness, supervision and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import httpx
import pytest

from llmprod.errors import InputError
from llmprod.serve.engines import (
    EngineCommand,
    EngineProcess,
    Supervisor,
    choose_engine,
    transformers_command,
    vllm_command,
)
from llmprod.serve.spec import EngineOptions
from llmprod.serve.upstream import AiohttpUpstream, EngineState
from llmprod.testing.servers import free_port, running


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
                            tensor_parallel_size=2, pipeline_parallel_size=2, extra_args=("--enable-prefix-caching",))
    command = vllm_command("/venv/bin/vllm", "./llama-gptq", "llama", 41000, options, "test")
    assert command.argv == ("/venv/bin/vllm", "serve", "./llama-gptq", "--host", "127.0.0.1", "--port", "41000",
                            "--served-model-name", "llama", "--max-model-len", "8192",
                            "--gpu-memory-utilization", "0.85", "--kv-cache-dtype", "fp8",
                            "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2", "--enable-prefix-caching")
    assert "--quantization" not in command.argv  # vLLM reads it from the checkpoint
    assert command.base_url == "http://127.0.0.1:41000"


def test_data_parallelism_is_vllms_own_one_engine_to_supervise():
    """serve --data-parallel-size N: vLLM runs N ranks behind its one API server and balances them itself; llmprod
    still starts, watches and stops one process group on one port."""
    command = vllm_command("/venv/bin/vllm", "./llama", "llama", 41000, EngineOptions(data_parallel_size=2,
                           tensor_parallel_size=1), "test")
    assert command.argv[-4:] == ("--tensor-parallel-size", "1", "--data-parallel-size", "2")
    with pytest.raises(InputError, match="--data-parallel-size only apply to the vLLM engine"):
        transformers_command("./tiny", 41001, EngineOptions(data_parallel_size=2), "test")


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


def test_supervisor_restarts_a_dead_engine_and_stop_kills_the_whole_group(tmp_path):
    port = free_port()
    engine = EngineProcess(fake_engine_command(port), tmp_path / "engine.log")
    state = EngineState(f"http://127.0.0.1:{port}", supervised=True)
    events = []

    async def scenario():
        upstream = AiohttpUpstream(state.base_url)
        try:
            engine.start()
            await engine.wait_ready(30, upstream)
            first_pid = engine.pid
            supervisor = Supervisor(engine, state, 30, on_event=events.append, backoff=(0.2,))
            task = asyncio.ensure_future(supervisor.run(upstream))
            os.killpg(first_pid, signal.SIGKILL)  # the engine dies
            deadline = time.monotonic() + 30
            while state.up and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert not state.up and "restarted" in state.reason
            while not state.up and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            supervisor.stopping = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return first_pid
        finally:
            await upstream.close()

    first_pid = asyncio.run(scenario())
    assert state.up and engine.pid != first_pid and engine.starts == 2
    assert any("restarting" in e for e in events) and any("is back" in e for e in events)
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    pgid = engine.pid
    engine.stop(grace=5)
    assert not group_alive(pgid)  # the child it spawned is gone too
    assert "starting vllm engine" in (tmp_path / "engine.log").read_text()


def test_a_leader_that_dies_alone_takes_its_group_with_it_before_the_restart(tmp_path):
    """vLLM's API server killed on its own leaves its EngineCore holding GPU memory: the supervisor stops
    what is left of the old group before it starts a new one."""
    port, pid_file = free_port(), tmp_path / "child.pid"
    command = EngineCommand("vllm", (sys.executable, "-m", "llmprod.testing.fake_engine", "--port", str(port),
                                     "--spawn-child", "--child-pid-file", str(pid_file)), port, "fake", "test")
    engine = EngineProcess(command, tmp_path / "engine.log")
    state = EngineState(f"http://127.0.0.1:{port}", supervised=True)

    async def scenario():
        upstream = AiohttpUpstream(state.base_url)
        try:
            engine.start()
            await engine.wait_ready(30, upstream)
            leader, orphan = engine.pid, int(pid_file.read_text())
            supervisor = Supervisor(engine, state, 30, on_event=lambda _: None, backoff=(0.2,))
            task = asyncio.ensure_future(supervisor.run(upstream))
            os.kill(leader, signal.SIGKILL)  # the leader only: its child lives on in the group
            deadline = time.monotonic() + 30
            while engine.pid == leader and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            supervisor.stopping = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return leader, orphan
        finally:
            await upstream.close()

    leader, orphan = asyncio.run(scenario())
    try:
        assert engine.pid != leader
        assert not group_alive(leader)  # the orphan went with its group
        assert not running(orphan)
    finally:
        engine.stop(grace=5)


def test_engine_that_exits_early_names_its_log(tmp_path):
    command = EngineCommand("vllm", (sys.executable, "-c", "import sys; print('CUDA out of memory'); sys.exit(1)"),
                            free_port(), "x", "test")
    engine = EngineProcess(command, tmp_path / "engine.log")

    async def go():
        upstream = AiohttpUpstream(command.base_url)
        try:
            engine.start()
            await engine.wait_ready(30, upstream)
        finally:
            await upstream.close()

    from llmprod.serve.engines import EngineFailed

    with pytest.raises(EngineFailed) as err:
        asyncio.run(go())
    line = err.value.one_line()
    assert "exited with code 1" in line and str(tmp_path / "engine.log") in line and "CUDA out of memory" in line
