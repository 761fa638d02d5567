"""The bench command's body: validate, pre-flight, load, report (also on Ctrl-C), plot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmprod.bench.client import Target, normalize_base_url
from llmprod.bench.prompts import file_prompts, load_tokenizer, synthetic_prompts
from llmprod.bench.runner import BenchPlan, BenchState, run_bench
from llmprod.bench.stats import Goodput
from llmprod.errors import CheckFailed, InputError, require
from llmprod.output import Output


@dataclass(frozen=True)
class BenchOptions:
    url: str
    model: str
    concurrency: str
    requests: int | None
    duration: float | None
    input_tokens: int
    output_tokens: int
    dataset: Path | None
    endpoint: str
    api_key: str | None
    plot: Path | None
    goodput: str | None
    ignore_eos: bool
    seed: int


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(c < 1 for c in levels):
        raise InputError(f"--concurrency {text!r} is not a list of positive integers", hint="e.g. --concurrency 1,4,16")
    return levels


def parse_goodput(text: str | None) -> Goodput | None:
    if not text:
        return None
    values: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition(":")
        try:
            if key.strip() not in ("ttft", "tpot") or float(value) <= 0:
                raise ValueError
            values[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--goodput {text!r} is not ttft:MS,tpot:MS", hint="e.g. --goodput ttft:500,tpot:50")
    return Goodput(ttft_ms=values.get("ttft"), tpot_ms=values.get("tpot"))


def build_plan(o: BenchOptions, out: Output) -> BenchPlan:
    levels = parse_concurrency(o.concurrency)
    good = parse_goodput(o.goodput)
    for name, value in (("--requests", o.requests), ("--input-tokens", o.input_tokens),
                        ("--output-tokens", o.output_tokens)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1")
    if o.duration is not None and o.duration <= 0:
        raise InputError("--duration must be positive")
    if o.plot is not None:
        require("matplotlib", "bench")
        if o.plot.suffix.lower() != ".png":
            raise InputError(f"--plot {o.plot} should end in .png")
    target = Target(normalize_base_url(o.url), o.model, o.endpoint, o.api_key, o.output_tokens, o.ignore_eos)
    if o.dataset is not None:
        prompts = file_prompts(o.dataset)
    else:
        tokenizer = load_tokenizer(o.model)
        out.note(f"synthetic prompts of {o.input_tokens} tokens "
                 + ("(counted with the model's tokenizer)" if tokenizer is not None
                    else "(no tokenizer for this model here: about 1.3 tokens per word)"))
        count = max(plan_requests(levels, o.requests), 1)
        prompts = synthetic_prompts(min(count, 4096), o.input_tokens, tokenizer, o.seed)
    return BenchPlan(target, prompts, levels, o.requests, o.duration, good)


def plan_requests(levels: list[int], requests: int | None) -> int:
    return max(requests or max(16, 4 * c) for c in levels)


def run(o: BenchOptions, out: Output, emit: Callable[[dict[str, Any]], None]) -> None:
    """Measure every level, then `emit(result)` (measured so far, on Ctrl-C), then refuse what failed."""
    require("aiohttp", "bench")
    plan = build_plan(o, out)
    state = BenchState()
    interrupted = False
    with out.progress() as progress:
        task = progress.add_task("pre-flight", total=None)

        def on_request(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total,
                            description=f"concurrency {state.current_concurrency}")

        try:
            asyncio.run(run_bench(plan, state, on_request, out.warn))
        except KeyboardInterrupt:
            interrupted = True
    levels = list(state.levels)
    if interrupted:
        partial = state.partial_level(plan.goodput)
        if partial is not None:
            levels.append(partial)
    result: dict[str, Any] = {"url": plan.target.base_url, "model": o.model, "endpoint": o.endpoint,
                              "input_tokens": o.input_tokens if o.dataset is None else None,
                              "output_tokens": o.output_tokens, "levels": levels}
    if interrupted:
        result["interrupted"] = True
    if o.plot is not None and levels:
        from llmprod.bench.plot import plot_levels

        plot_levels(levels, o.plot, f"{o.model} at {plan.target.base_url}")
        result["plot"] = str(o.plot)
    emit(result)
    if interrupted:
        raise KeyboardInterrupt
    failed = [lv for lv in levels if lv["requests"] == 0 and lv["errors"] > 0]
    if failed:
        lv = failed[0]
        raise CheckFailed(f"every request failed at concurrency {lv['concurrency']}: "
                          f"{(lv.get('error_messages') or ['?'])[0]}", hint="see the server's log")
