"""The bench command's body: validate, pre-flight, load, report (also on Ctrl-C), plot."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmprod.bench.client import Target, normalize_base_url
from llmprod.bench.prompts import file_prompts, load_tokenizer, synthetic_prompts
from llmprod.bench.runner import BenchPlan, BenchState, Load, run_bench
from llmprod.bench.stats import Goodput
from llmprod.errors import CheckFailed, InputError, require
from llmprod.output import Output


@dataclass(frozen=True)
class BenchOptions:
    url: str
    model: str
    concurrency: str | None  # None: the default closed-loop levels, unless --rate is given
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
    rate: str | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    find_max: str | None = None
    percentile: int = 99
    server_metrics: bool = True
    csv: Path | None = None
    report: Path | None = None


DEFAULT_CONCURRENCY = "1,4,16,64"


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        rates = []
    if not rates or any(not r > 0 or r == float("inf") for r in rates):
        raise InputError(f"--rate {text!r} is not a list of positive requests per second", hint="e.g. --rate 1,2,4.5")
    return rates


def parse_loads(o: BenchOptions) -> list[Load]:
    """--rate (open loop) or --concurrency (closed loop), never both; --concurrency auto only to search."""
    if o.rate is not None and o.concurrency is not None:
        raise InputError("--rate and --concurrency both given",
                         hint="--rate is open loop, --concurrency closed loop; cap an open loop with --max-concurrency")
    if o.rate is None:
        if o.max_concurrency is not None:
            raise InputError("--max-concurrency caps an open loop", hint="give --rate with it, or use --concurrency")
        if o.arrival != "poisson" or o.burstiness != 1.0:
            raise InputError("--arrival and --burstiness shape an open loop's arrivals", hint="give --rate with them")
    if o.max_concurrency is not None and o.max_concurrency < 1:
        raise InputError(f"--max-concurrency {o.max_concurrency} is not a positive number of requests")
    if not o.burstiness > 0:
        raise InputError(f"--burstiness {o.burstiness} is not positive", hint="1 is Poisson; below 1 is burstier")
    if o.burstiness != 1.0 and o.arrival != "gamma":
        raise InputError(f"--burstiness is the gamma distribution's shape; --arrival is {o.arrival}",
                         hint="add --arrival gamma")
    if o.concurrency == "auto":
        if not o.find_max:
            raise InputError("--concurrency auto is what --find-max searches", hint="give --find-max SLOS with it")
        return [Load(concurrency=1)]
    if o.rate is not None:
        return [Load(rate=r) for r in parse_rates(o.rate)]
    return [Load(concurrency=c) for c in parse_concurrency(o.concurrency or DEFAULT_CONCURRENCY)]


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
    from llmprod.bench.search import SearchSpec, parse_slos

    loads = parse_loads(o)
    good = parse_goodput(o.goodput)
    search = None
    if o.find_max:
        slos = parse_slos(o.find_max, o.percentile)
        if o.rate is not None:  # from the lowest rate given
            mode, start = "rate", min(lo.rate for lo in loads)
        elif o.concurrency is not None:  # "auto" (from 1), or from the fewest streams given
            mode, start = "concurrency", float(min(lo.concurrency for lo in loads))
        else:
            mode, start = "rate", 1.0
        search = SearchSpec(slos, o.percentile, mode, start)
        loads = [Load(rate=start) if mode == "rate" else Load(concurrency=int(start))]
    for path, suffix, flag in ((o.csv, ".csv", "--csv"), (o.report, ".html", "--report")):
        if path is not None and path.suffix.lower() != suffix:
            raise InputError(f"{flag} {path} should end in {suffix}")
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
        count = max(plan_requests(loads, o.requests), 1)
        prompts = synthetic_prompts(min(count, 4096), o.input_tokens, tokenizer, o.seed)
    from llmprod.urls import server_root

    metrics_url = server_root(o.url, "URL") + "/metrics" if o.server_metrics else None
    return BenchPlan(target, prompts, loads, o.requests, o.duration, good, arrival=o.arrival,
                     burstiness=o.burstiness, max_concurrency=o.max_concurrency, seed=o.seed,
                     metrics_url=metrics_url, search=search)


def plan_requests(loads: list[Load], requests: int | None) -> int:
    # An open loop or a search needs as many prompts as it may send; they repeat past 4,096 anyway.
    return max(requests or (max(16, 4 * lo.concurrency) if lo.concurrency else 4096) for lo in loads)


def run(o: BenchOptions, out: Output, emit: Callable[[dict[str, Any]], None]) -> None:
    """Measure every level, then `emit(result)` (measured so far, on Ctrl-C), then refuse what failed."""
    require("aiohttp", "bench")
    plan = build_plan(o, out)
    state = BenchState()
    interrupted = False
    with out.progress() as progress:
        task = progress.add_task("pre-flight", total=None)

        def on_request(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total, description=state.current_label or "")

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
                              "output_tokens": o.output_tokens,
                              "loop": "open" if any(lo.rate is not None for lo in plan.loads) else "closed",
                              "levels": levels}
    if plan.search is not None:
        s = plan.search
        result["search"] = {"mode": s.mode, "percentile": s.percentile, "slos_ms": {
            k.removesuffix("_ms"): v for k, v in s.slos.items()}, "answer": state.answer, "probes": state.probes}
        levels.sort(key=lambda lv: lv["rate"] if s.mode == "rate" else lv["concurrency"])
    if interrupted:
        result["interrupted"] = True
    title = f"{o.model} at {plan.target.base_url}"
    if o.plot is not None and levels:
        from llmprod.bench.plot import plot_levels

        plot_levels(levels, o.plot, title, search=result.get("search"))
        result["plot"] = str(o.plot)
    if o.csv is not None:
        from llmprod.bench.report import write_csv

        write_csv(levels, o.csv)
        result["csv"] = str(o.csv)
    if o.report is not None and levels:
        from llmprod.bench.report import write_html

        write_html(result, o.report, title)
        result["report"] = str(o.report)
    emit(result)
    if interrupted:
        raise KeyboardInterrupt
    if plan.search is not None and state.answer is None and levels:
        misses = "; ".join(state.probes[0]["misses"]) if state.probes else "no probe ran"
        raise CheckFailed(f"even the lowest load ({plan.loads[0]}) misses the SLOs: {misses}",
                          hint="lower the start (--rate or --concurrency), or relax --find-max")
    failed = [lv for lv in levels if lv["requests"] == 0 and lv["errors"] > 0]
    if failed:
        lv = failed[0]
        where = f"rate {lv['rate']:g}/s" if lv.get("rate") is not None else f"concurrency {lv['concurrency']}"
        raise CheckFailed(f"every request failed at {where}: "
                          f"{(lv.get('error_messages') or ['?'])[0]}", hint="see the server's log")
