"""`serve --workers N`: N gateway processes on one port in front of one engine, as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from llmprod.serve.engines import HEALTH_POLL, free_port
from llmprod.serve.run import slots_per_process
from llmprod.testing.servers import proc_stat, running, wait_until

TOTAL = re.compile(r'^llmprod_requests_total\{route="chat",status="(\d+)"\} ([\d.]+)$', re.M)


def cpu_ticks(pid: int) -> int:
    fields = proc_stat(pid)[1]
    return int(fields[11]) + int(fields[12])


def statuses(metrics_url: str) -> dict[str, float]:
    return {code: float(n) for code, n in TOTAL.findall(httpx.get(metrics_url).text)}


def stream_once(url: str) -> str:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
    return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "hello"}], stream=True) if c.choices)


def test_max_concurrency_is_shared_out():
    assert slots_per_process(256, 1) == 256
    assert slots_per_process(256, 3) == 86
    assert slots_per_process(2, 4) == 1


@pytest.mark.timeout(120)
def test_workers_share_the_port_the_load_and_the_metrics_and_stop_together(serve_process, fake_engine):
    proc, ready = serve_process("--upstream", fake_engine.url + "/v1", "--port", str(free_port()), "--workers", "3")
    pids = ready["worker_pids"]
    assert ready["workers"] == 3 and len(pids) == 3 and pids[0] == proc.pid and all(map(running, pids))
    before = {pid: cpu_ticks(pid) for pid in pids}
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: stream_once(ready["url"]), range(96)))
    assert all(a == "t0 t1 t2 t3 t4 t5 t6 t7 " for a in answers)  # the default policy let them through
    busy = [pid for pid in pids if cpu_ticks(pid) - before[pid] >= 2]
    assert len(busy) >= 2, (before, {pid: cpu_ticks(pid) for pid in pids})  # the kernel spread connections
    # Whichever process answers /metrics, it counts every process's requests.
    for _ in range(6):
        assert statuses(ready["metrics_url"]) == {"200": 96.0}
    assert "llmprod_requests_in_flight 0.0" in httpx.get(ready["metrics_url"]).text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    wait_until(lambda: not any(running(pid) for pid in pids), timeout=20)
    assert proc.stdout.read() == ""  # one JSON document on stdout, the workers' output on stderr
    assert not list(Path("/tmp").glob(f"llmprod-metrics-*/counter_{pids[1]}.db"))  # the directory is gone


@pytest.mark.timeout(120)
def test_a_worker_that_dies_is_replaced_and_the_others_keep_serving(serve_process, fake_engine):
    proc, ready = serve_process("--upstream", fake_engine.url + "/v1", "--port", str(free_port()), "--workers", "2")
    victim = ready["worker_pids"][1]
    os.kill(victim, signal.SIGKILL)
    answers = [stream_once(ready["url"]) for _ in range(20)]
    assert all(a == "t0 t1 t2 t3 t4 t5 t6 t7 " for a in answers)
    replaced = []

    def restarted() -> bool:
        workers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != victim
                   and running(int(p.name)) and b"llmprod.serve.worker" in (p / "cmdline").read_bytes()]
        replaced[:] = [int(p.name) for p in workers]
        return bool(workers)

    wait_until(restarted, timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert f"gateway worker 1 (pid {victim}) exited with code -9; starting another" in proc.stderr.read()
    wait_until(lambda: not any(running(pid) for pid in replaced), timeout=20)


@pytest.mark.timeout(180)
def test_workers_follow_a_supervised_engine_through_its_restart(serve_process, fake_vllm, tmp_path, model_dirs):
    proc, ready = serve_process("fake", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(free_port()),
                                "--workers", "2", "--engine-log", str(tmp_path / "e.log"))
    assert stream_once(ready["url"])
    os.killpg(ready["engine_pid"], signal.SIGKILL)
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = httpx.post(f"{ready['url']}/chat/completions", timeout=30,
                              json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
        seen.add(response.status_code)
        if response.status_code != 200:
            assert response.json()["error"]["message"]  # OpenAI's shape, from whichever process
        elif 503 in seen or 502 in seen:
            break
        time.sleep(0.05)
    assert seen >= {200} and seen - {200} <= {502, 503}, seen
    # That 200 came from one process; each one sees the engine back within its next health check.
    time.sleep(3 * HEALTH_POLL)
    # back: every process answers again (twenty requests, new connections, land on both)
    assert all(httpx.post(f"{ready['url']}/chat/completions", timeout=30, json={
        "model": "fake", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200 for _ in range(20))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


@pytest.mark.timeout(120)
def test_a_killed_serve_leaves_neither_its_workers_nor_its_engine(serve_process, fake_vllm, tmp_path, model_dirs):
    """SIGKILL gives serve no chance to stop anything: its children are told by the kernel (Linux)."""
    proc, ready = serve_process("fake", "--engine", "vllm", "--vllm-bin", str(fake_vllm), "--port", str(free_port()),
                                "--workers", "2", "--engine-log", str(tmp_path / "e.log"))
    children = [ready["engine_pid"], *ready["worker_pids"][1:]]
    assert all(running(pid) for pid in children)
    proc.kill()
    proc.wait(timeout=30)
    wait_until(lambda: not any(running(pid) for pid in children), timeout=30)


@pytest.mark.parametrize("args,words", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "2", "--api-keys", "{limited}"], "needs --workers 1"),
])
def test_bad_workers_are_exit_2(cli, tmp_path, args, words, model_dirs):
    limited = tmp_path / "keys.yaml"
    limited.write_text("keys:\n  - name: ci\n    key: secret-key-1234\n    requests_per_minute: 10\n")
    args = [a.format(limited=limited) for a in args]
    result = cli("serve", "./m", "--port", str(free_port()), *args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert words in " ".join(result.stderr.split()) and result.stderr.strip().count("\n") == 0


@pytest.mark.timeout(120)
def test_sighup_reloads_the_keys_in_every_process(serve_process, fake_engine, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("old-key-0123456789\n")
    proc, ready = serve_process("--upstream", fake_engine.url + "/v1", "--port", str(free_port()), "--workers", "2",
                                "--api-keys", str(keys))

    def statuses_with(key: str) -> set[int]:  # twenty requests on new connections: both processes answer some
        return {httpx.get(f"{ready['url']}/models", headers={"Authorization": f"Bearer {key}"}).status_code
                for _ in range(20)}

    assert statuses_with("old-key-0123456789") == {200}
    keys.write_text("new-key-0123456789\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: statuses_with("new-key-0123456789") == {200}, timeout=20)
    assert statuses_with("old-key-0123456789") == {401}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


@pytest.mark.timeout(120)
def test_sigterm_lets_every_process_finish_its_streams(serve_process, fake_engine):
    proc, ready = serve_process("--upstream", fake_engine.url + "/v1", "--port", str(free_port()), "--workers", "3")
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "slow:1.5"}]}

    def stream() -> list[str]:
        with httpx.stream("POST", f"{ready['url']}/chat/completions", json=body, timeout=30) as response:
            return [line for line in response.iter_lines() if line.startswith("data:")]

    with ThreadPoolExecutor(12) as pool:
        streams = [pool.submit(stream) for _ in range(12)]  # twelve connections: every process has some
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        finished = [s.result() for s in streams]
    assert all(lines and lines[-1] == "data: [DONE]" for lines in finished)
    assert proc.wait(timeout=60) == 0
    wait_until(lambda: not any(running(pid) for pid in ready["worker_pids"]), timeout=20)
