"""Client keys and limits: the file formats, the buckets, and the gateway enforcing them over real HTTP."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import httpx
import openai
import pytest

from llmprod.errors import ConfigError
from llmprod.serve.keys import Bucket, KeyRing, Limiter, load_keys


def _write(tmp_path, text, name="keys.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plain_file_one_key_per_line(tmp_path):
    keys = load_keys(_write(tmp_path, "# clients\nkey-alpha-0001\n\nkey-beta-0002\n", "keys.txt"))
    assert [k.name for k in keys] == ["key-1", "key-2"]
    assert keys[0].digest == hashlib.sha256(b"key-alpha-0001").digest()
    assert keys[0].requests_per_minute is None


def test_yaml_with_names_hashes_and_limits(tmp_path):
    hashed = hashlib.sha256(b"team-b-secret").hexdigest()
    keys = load_keys(_write(tmp_path, f"""keys:
  - name: team-a
    key: team-a-secret
    requests_per_minute: 60
  - name: team-b
    sha256: {hashed}
    tokens_per_minute: 1000
"""))
    ring = KeyRing(keys)
    assert ring.identify(b"team-a-secret").name == "team-a"
    assert ring.identify(b"team-b-secret").name == "team-b"  # the file never held that key
    assert ring.identify(b"team-c-secret") is None and ring.identify(b"") is None


@pytest.mark.parametrize("text,message", [
    ("keys:\n  - name: a\n", "exactly one of key and sha256"),
    ("keys:\n  - name: a\n    key: k1\n    sha256: abc\n", "exactly one of key and sha256"),
    ("keys:\n  - name: a\n    sha256: nothex\n", "64 hex digits"),
    ("keys:\n  - name: a b\n    key: k1\n", "is not 1-64 letters"),
    ("keys:\n  - name: a\n    key: k1\n    requests_per_minute: 0\n", "positive number"),
    ("keys:\n  - name: a\n    key: k1\n    tokens_per_minute: lots\n", "positive number"),
    ("keys:\n  - name: a\n    key: k1\n    burst: 3\n", "unknown field(s) burst"),
    ("keys:\n  - name: a\n    key: k1\n  - name: a\n    key: k2\n", "used twice"),
    ("keys:\n  - name: a\n    key: k1\n  - name: b\n    key: k1\n", "repeats another entry's key"),
    ("keys:\n  - name: a\n    key: [k1\n", "not valid YAML (line"),
    ("keys: {}\n", "top-level `keys:` list"),
    ("keys: []\n", "holds no key"),
])
def test_bad_key_files_are_refused_with_the_entry(tmp_path, text, message):
    import re

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_keys(_write(tmp_path, text))


def test_buckets_refill_over_a_minute_and_tokens_are_charged_after():
    now = [1000.0]
    limiter = Limiter(Bucket(2), Bucket(100))
    assert limiter.admit(now[0]) is None and limiter.admit(now[0]) is None
    limit, wait = limiter.admit(now[0])
    assert limit == "requests_per_minute" and wait == pytest.approx(30.0)  # 2 a minute: one every 30 s
    now[0] += 30
    assert limiter.admit(now[0]) is None
    limiter.charge(250, now[0])  # an answer's usage, known only at its end: the client is in debt
    limit, wait = limiter.admit(now[0])
    assert limit == "tokens_per_minute" and wait == pytest.approx((1 + 150) * 60 / 100)


def test_a_reload_keeps_the_buckets_of_clients_that_stay(tmp_path):
    now = [0.0]
    ring = KeyRing(load_keys(_write(tmp_path, "keys:\n  - {name: a, key: ka, requests_per_minute: 1}\n")),
                   clock=lambda: now[0])
    assert ring.admit("a") is None and ring.admit("a") is not None
    ring.replace(load_keys(_write(tmp_path, "keys:\n  - {name: a, key: ka2, requests_per_minute: 1}\n"
                                            "  - {name: b, key: kb}\n")))
    assert ring.admit("a") is not None  # still limited: a new key does not reset the client
    assert ring.identify(b"ka") is None and ring.identify(b"ka2").name == "a" and ring.admit("b") is None


def test_gateway_enforces_each_clients_limits_and_labels_metrics_by_name(fake_engine, start_gateway, tmp_path):
    keys = KeyRing(load_keys(_write(tmp_path, """keys:
  - {name: steady, key: steady-key-1}
  - {name: capped, key: capped-key-1, requests_per_minute: 2}
  - {name: thrifty, key: thrifty-key-1, tokens_per_minute: 10}
""")))
    url, _ = start_gateway(fake_engine.url, keys=keys)

    def chat(key: str, stream: bool = False):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        return client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=8, stream=stream)

    for _ in range(5):
        chat("steady-key-1")
    chat("capped-key-1")
    chat("capped-key-1")
    with pytest.raises(openai.RateLimitError) as refused:
        chat("capped-key-1")
    assert refused.value.response.headers["retry-after"] == "30"
    assert refused.value.body["code"] == "rate_limit_exceeded" and "requests per minute" in refused.value.body["message"]
    chat("thrifty-key-1")  # its usage (prompt + 8 tokens) is charged when the answer ends
    for _ in chat("thrifty-key-1", stream=True):
        pass
    with pytest.raises(openai.RateLimitError):
        chat("thrifty-key-1")  # now in debt
    with pytest.raises(openai.AuthenticationError):
        chat("capped-key-2")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmprod_client_requests_total{key="steady",status="200"} 5.0' in metrics
    assert 'llmprod_client_requests_total{key="capped",status="429"} 1.0' in metrics
    assert 'llmprod_rate_limited_total{key="thrifty",limit="tokens_per_minute"} 1.0' in metrics
    assert 'llmprod_client_tokens_total{key="thrifty"}' in metrics
    assert "capped-key-1" not in metrics and "thrifty-key-1" not in metrics  # names, never keys


@pytest.mark.slow
def test_serve_reloads_its_keys_on_sighup_without_dropping_a_stream(serve_process, fake_engine, tmp_path, unused_port):
    path = _write(tmp_path, "keys:\n  - {name: old, key: old-key-0001}\n")
    proc, ready = serve_process("--upstream", fake_engine.url, "--api-keys", str(path), "--port", str(unused_port),
                                "--no-guardrails")
    assert ready["auth"].startswith("api keys: 1 client(s)")
    old = openai.OpenAI(base_url=ready["url"], api_key="old-key-0001", max_retries=0)
    stream = old.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                         stream=True)
    first = next(iter(stream))
    path.write_text("keys:\n  - {name: new, key: new-key-0001}\n")
    os.kill(proc.pid, signal.SIGHUP)
    rest = list(stream)  # the stream that began under the old key ends normally
    assert first and rest and rest[-1].choices[-1].finish_reason
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            old.models.list()
            time.sleep(0.1)
        except openai.AuthenticationError:
            break
    with pytest.raises(openai.AuthenticationError):
        old.models.list()
    new = openai.OpenAI(base_url=ready["url"], api_key="new-key-0001", max_retries=0)
    assert new.models.list().data
    path.write_text("keys: [broken\n")  # a bad file: the keys in force stay
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert new.models.list().data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "not reloaded" in proc.stderr.read()


def test_serve_refuses_a_bad_key_file_and_both_key_options(cli, tmp_path, fake_engine):
    bad = _write(tmp_path, "keys:\n  - {name: a}\n")
    result = cli("serve", "--upstream", fake_engine.url, "--api-keys", bad)
    assert result.exit_code == 2 and "exactly one of key and sha256" in result.stderr
    result = cli("serve", "--upstream", fake_engine.url, "--api-keys", bad, "--api-key", "k")
    assert result.exit_code == 2 and "--api-key and --api-keys both given" in result.stderr
