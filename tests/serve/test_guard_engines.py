"""`serve MODEL --engine vllm` with a policy whose Llama Guard models have no `endpoint:` (issue #32): one vLLM per
guard model beside the main engine, the memory split, the policy pointed at them, supervision, SIGTERM.

vLLM cannot run here: the stand-in `vllm` (llmprod.testing.fake_engine) serves the main model, and a guard
model's directory with the real tiny Llama Guard (llmprod.testing.guard_endpoint), so the verdicts are real."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from llmprod.errors import InputError
from llmprod.serve.engines import EngineCommand
from llmprod.guardrails.policy import served_guard_models
from llmprod.serve.guards import GUARD_MAX_MODEL_LEN, plan_guard_engines, pointed_policy
from llmprod.serve.run import with_utilization
from llmprod.testing.servers import free_port, wait_until

GiB = 1 << 30


def policy_doc(guard: Path, output_too: bool = True) -> dict:
    check = {"check": "llama_guard", "action": "block", "options": {"model": str(guard), "format": "llama-guard-3-8b",
                                                                    "threshold": 0.999999}}
    doc = {"name": "one-gpu", "input": [{"check": "secrets", "action": "block"}, check]}
    if output_too:
        doc["output"] = [{"check": "llama_guard", "action": "block", "options": dict(check["options"])}]
    return doc


def test_one_engine_per_distinct_guard_model_with_its_kv_cache_and_the_rest_for_the_main_model(tiny_llama_guard_dir):
    doc = policy_doc(tiny_llama_guard_dir)
    assert served_guard_models(doc) == [str(tiny_llama_guard_dir)]  # input and output share one engine
    engines, utilization = plan_guard_engines(doc, "/venv/bin/vllm", concurrency=16, gpu_bytes=80 * GiB,
                                              guard_gpu=None, main_utilization=None)
    (guard,) = engines
    argv = guard.command.argv
    assert argv[:3] == ("/venv/bin/vllm", "serve", str(tiny_llama_guard_dir))
    # its own length (the tiny guard's 2,048 positions; a real Llama Guard 3: GUARD_MAX_MODEL_LEN)
    assert argv[argv.index("--max-model-len") + 1] == str(guard.max_model_len) == str(min(GUARD_MAX_MODEL_LEN, 2048))
    kv = int(argv[argv.index("--kv-cache-memory") + 1])
    assert kv == guard.kv_cache_bytes > 0 and guard.total_bytes > kv
    # the main engine loses exactly the guards' planned share of vLLM's default 0.92
    assert utilization == pytest.approx(0.92 - guard.total_bytes / (80 * GiB), abs=1e-4)
    more, _ = plan_guard_engines(doc, "/venv/bin/vllm", concurrency=64, gpu_bytes=80 * GiB, guard_gpu=None,
                                 main_utilization=None)
    assert more[0].kv_cache_bytes == 4 * kv  # the guard's KV cache follows --max-concurrency
    own, none = plan_guard_engines(doc, "/venv/bin/vllm", concurrency=16, gpu_bytes=None, guard_gpu=1,
                                   main_utilization=None)
    assert none is None and own[0].command.env["CUDA_VISIBLE_DEVICES"] == "1"  # a GPU of their own: no split


def test_a_split_that_leaves_the_main_model_too_little_is_refused_before_anything_starts(tiny_llama_guard_dir):
    with pytest.raises(InputError, match="leaving the main model --gpu-memory-utilization"):
        plan_guard_engines(policy_doc(tiny_llama_guard_dir), "/v/vllm", concurrency=100_000, gpu_bytes=24 * GiB,
                           guard_gpu=None, main_utilization=None)
    with pytest.raises(InputError, match="its memory is unknown"):
        plan_guard_engines(policy_doc(tiny_llama_guard_dir), "/v/vllm", concurrency=8, gpu_bytes=None,
                           guard_gpu=None, main_utilization=None)


def test_the_policy_is_pointed_at_the_guard_engines_and_the_main_command_given_its_share(tiny_llama_guard_dir,
                                                                                     tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(policy_doc(tiny_llama_guard_dir)))
    engines, _ = plan_guard_engines(yaml.safe_load(path.read_text()), "/v/vllm", 8, 80 * GiB, None, None)
    pointed = yaml.safe_load(pointed_policy(path, engines).read_text())
    endpoints = {c["options"]["endpoint"] for stage in ("input", "output") for c in pointed[stage]
                 if c["check"] == "llama_guard"}
    assert endpoints == {engines[0].endpoint}
    command = EngineCommand("vllm", ("/v/vllm", "serve", "m", "--host", "127.0.0.1", "--port", "1",
                                     "--served-model-name", "m", "--enforce-eager"), 1, "m", "test")
    assert with_utilization(command, 0.8).argv[9:11] == ("--gpu-memory-utilization", "0.8")
    given = EngineCommand("vllm", command.argv[:9] + ("--gpu-memory-utilization", "0.9"), 1, "m", "test")
    assert with_utilization(given, 0.7).argv[-2:] == ("--gpu-memory-utilization", "0.7")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_command_starts_the_model_and_its_guard_engine_and_sigterm_stops_both(serve_process, fake_vllm, tmp_path,
                                                                                 tiny_llama_guard_dir, model_dirs):
    policy = tmp_path / "one-gpu.yaml"
    policy.write_text(yaml.safe_dump(policy_doc(tiny_llama_guard_dir)))
    port = free_port()
    proc, ready = serve_process("./some-model", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(port),
                                "--guardrails", str(policy), "--gpu-memory", "80GiB", "--max-concurrency", "16",
                                "--engine-log", str(tmp_path / "e.log"))
    try:
        (guard,) = ready["guard_engines"]
        assert guard["model"] == str(tiny_llama_guard_dir) and guard["kv_cache_memory_bytes"] > 0
        main_argv = (tmp_path / "e.log").read_text()
        assert "--gpu-memory-utilization 0.9" in main_argv  # 0.92 less the guard's share
        guard_log = Path(guard["log"]).read_text()
        assert "--kv-cache-memory" in guard_log and f"--max-model-len {guard['max_model_len']}" in guard_log
        # the gateway enforces the user's policy pointed at the guard engine: a file of its own, gone at exit
        pointed = Path(ready["guardrails"][0].split("(", 1)[1].rstrip(")"))
        assert pointed.name.startswith("llmprod-policy-")
        assert {c["options"]["endpoint"] for c in yaml.safe_load(pointed.read_text())["output"]} == {guard["endpoint"]}
        client = openai.OpenAI(base_url=ready["url"], api_key="none", max_retries=0)
        answer = client.chat.completions.create(model="./some-model", messages=[{"role": "user", "content": "echo"}])
        assert answer.choices[0].message.content == "echo"  # through Llama Guard on both sides, scored for real
        # the guard engine dies: its checks fail closed, then the supervisor brings it back
        os.killpg(guard["pid"], signal.SIGKILL)
        with pytest.raises(openai.APIStatusError) as err:
            for _ in range(50):
                client.chat.completions.create(model="./some-model", messages=[{"role": "user", "content": "echo"}])
                time.sleep(0.1)
        assert err.value.status_code == 503 and err.value.body["code"] == "guardrail_unavailable"

        def back() -> bool:
            try:
                return httpx.get(guard["endpoint"].removesuffix("/v1") + "/v1/models", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(back, timeout=120)
        wait_until(lambda: client.chat.completions.create(
            model="./some-model", messages=[{"role": "user", "content": "echo"}]).choices[0].message.content == "echo",
            timeout=60)
        restarted = int(Path(guard["log"]).read_text().count("--kv-cache-memory"))
        assert restarted >= 2  # the same command, started again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        for pid in (ready["engine_pid"],):
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
        assert not _guard_processes(tiny_llama_guard_dir)  # no guard engine left behind
        assert not pointed.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def _guard_processes(model: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "fake_engine" in cmdline and str(model) in cmdline:
                pids.append(int(entry.name))
    return pids


def test_estimate_memory_shows_the_same_split_serve_makes(cli, tiny_llama_guard_dir):
    """`estimate-memory MODEL --guard GUARD`: the guard engine's share first, the model planned with the rest,
    the same utilization serve would give its engine."""
    model = str(Path(__file__).resolve().parents[1] / "data" / "model-configs" / "meta-llama__Llama-3.1-8B-Instruct.json")
    alone = cli("estimate-memory", model, "--gpu", "H100", "--max-model-len", "8k", "--json").json()
    result = cli("estimate-memory", model, "--gpu", "H100", "--max-model-len", "8k", "--guard", str(tiny_llama_guard_dir),
                 "--max-concurrency", "16", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    (guard,) = doc["guard_engines"]
    _, utilization = plan_guard_engines(policy_doc(tiny_llama_guard_dir), "/v/vllm", 16, 81_559 << 20, None, None)
    assert doc["vllm"]["gpu_memory_utilization"] == utilization < 0.92
    assert doc["kv_cache_bytes"] < alone["kv_cache_bytes"]
    refused = cli("estimate-memory", model, "--kv-cache-memory", "10GiB", "--guard", str(tiny_llama_guard_dir))
    assert refused.exit_code == 2 and "--guard needs the GPU's memory" in refused.stderr


@pytest.mark.parametrize("args", [["--engine", "transformers", "--guard-gpu", "1"],
                                  ["--upstream", "http://127.0.0.1:9", "--gpu-memory", "80GiB"]])
def test_guard_placement_without_vllm_is_refused(cli, args, model_dirs):
    result = cli("serve", *(["./m"] if "--upstream" not in args else []), *args)
    assert result.exit_code == 2 and "use them with --engine vllm" in result.stderr
