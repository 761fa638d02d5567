"""Perplexity as the model is served: the same windows, scored from vLLM's prompt logprobs.

Each window's token ids go to /v1/completions as the prompt (no retokenization on the server) with
`max_tokens: 1` and vLLM's `prompt_logprobs: 0`, which returns, for every prompt position after the first,
the log-probability the served model (its kernels: Marlin, Machete, CUTLASS FP8...) gave the actual token.
The scored positions are summed exactly as the transformers path sums its NLL, so the two paths differ
only by the numerics of the kernels that ran.

`--engine vllm` launches vLLM as `serve` does (llmprod.serve.engines) and stops it after; `--upstream URL`
uses a vLLM already serving the model.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from llmprod.errors import InputError, OperationFailed
from llmprod.evaluate.perplexity import ProgressFn, Window, WindowPlan

HINT = "the server must return vLLM's prompt_logprobs (vLLM does; transformers serve and most others do not)"


@dataclass(frozen=True)
class Served:
    """Where the model being scored is served, and what to report about the engine."""

    base_url: str  # the server's root, without /v1
    model: str  # the name it serves the model under
    engine: str  # "vllm 0.26.0 (launched)", "http://host:8000 (--upstream)"
    details: dict[str, Any] | None = None  # vLLM's start-up figures (kernels, dtype, ...), when launched
    api_key: str | None = None


def window_request(model: str, ids: Sequence[int]) -> dict[str, Any]:
    return {"model": model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def answer_nll(answer: Any, ids: Sequence[int], window: Window, index: int) -> float:
    """Summed NLL of the window's scored targets from one completions answer's prompt_logprobs."""
    try:
        logprobs = answer["choices"][0]["prompt_logprobs"]
    except (KeyError, IndexError, TypeError):
        logprobs = None
    if not isinstance(logprobs, list) or len(logprobs) != window.end - window.begin:
        got = "none" if logprobs is None else f"{len(logprobs) if isinstance(logprobs, list) else 'unreadable'}"
        raise OperationFailed(f"window {index} came back without prompt logprobs for its "
                              f"{window.end - window.begin} tokens (got {got})", hint=HINT)
    total = 0.0
    for position in range(window.score_from - window.begin, window.end - window.begin):
        entry = logprobs[position]
        token = str(ids[window.begin + position])
        value = entry.get(token) if isinstance(entry, dict) else None
        logprob = value.get("logprob") if isinstance(value, dict) else value
        if not isinstance(logprob, (int, float)):
            raise OperationFailed(f"window {index}, position {position}: no logprob for the prompt's token {token}",
                                  hint=HINT)
        total -= float(logprob)
    return total


def served_nll(served: Served, ids: Sequence[int], plan: WindowPlan, concurrency: int = 8,
               on_progress: ProgressFn | None = None, post: Callable[[dict], Any] | None = None) -> tuple[float, float]:
    """(total NLL, seconds): the windows `concurrency` at a time."""
    import httpx
    import orjson

    client = None
    if post is None:
        headers = {"Authorization": f"Bearer {served.api_key}"} if served.api_key else {}
        client = httpx.Client(base_url=served.base_url, headers=headers, timeout=600.0,
                              limits=httpx.Limits(max_connections=concurrency))

        def post(body: dict) -> Any:
            response = client.post("/v1/completions", json=body)
            if response.status_code != 200:
                raise OperationFailed(f"the server answered a window with HTTP {response.status_code}: "
                                      f"{response.text[:200]}", hint="check the server's log")
            # A window's prompt logprobs are ~170 KB of JSON; orjson parses them 4x faster than json, and the
            # threads take turns under the GIL for it.
            return orjson.loads(response.content)

    seq_len = plan.windows[0].end - plan.windows[0].begin
    done = 0
    started = time.perf_counter()

    def one(item: tuple[int, Window]) -> float:
        index, window = item
        return answer_nll(post(window_request(served.model, ids[window.begin:window.end])), ids, window, index)

    total = 0.0
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for nll in pool.map(one, enumerate(plan.windows)):
                total += nll
                done += seq_len
                if on_progress is not None:
                    on_progress(done, len(plan.windows) * seq_len)
    except httpx.HTTPError as exc:
        raise OperationFailed(f"cannot score on {served.base_url}: {type(exc).__name__}: {exc}",
                              hint="is the server up, and is the URL right?") from exc
    finally:
        if client is not None:
            client.close()
    return total, time.perf_counter() - started


def launch_vllm(model: str, seq_len: int, vllm_bin: str | None, tensor_parallel_size: int | None,
                log_dir: Path, timeout: float = 900.0, gpu_memory_utilization: float | None = None):
    """Start `vllm serve MODEL` as `llmprod serve --engine vllm` does; (EngineProcess, Served). The caller stops it."""
    from llmprod.serve.engines import EngineProcess, free_port, vllm_command
    from llmprod.serve.spec import EngineOptions
    from llmprod.serve.upstream import AiohttpUpstream
    from llmprod.vllm import find_vllm, read_startup

    path = find_vllm(vllm_bin)
    if path is None:
        raise InputError("--engine vllm, but no vllm executable is on PATH",
                         hint="install vLLM (it needs a GPU), pass --vllm-bin, or use --engine transformers")
    # vLLM refuses a prompt whose length plus max_tokens exceeds --max-model-len: a window and the one token.
    options = EngineOptions(max_model_len=seq_len + 1, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization)
    command = vllm_command(path, model, "scored", free_port(), options, "--engine vllm")
    engine = EngineProcess(command, log_dir / f"perplexity-vllm-{command.port}.log")
    engine.start()
    upstream = AiohttpUpstream(command.base_url, 30.0)

    async def ready() -> None:
        try:
            await engine.wait_ready(timeout, upstream)
        finally:
            await upstream.close()

    try:
        asyncio.run(ready())
    except BaseException:
        engine.stop()
        raise
    startup = read_startup(engine.log_path)
    figures = startup.figures()
    version = figures.pop("version", None)
    served = Served(command.base_url.removesuffix("/v1"), "scored", f"vllm {version or '?'} (launched)", figures)
    return engine, served
