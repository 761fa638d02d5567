"""When each request of an open-loop level is sent: Poisson, gamma or evenly spaced arrivals at a rate.

Gamma inter-arrival times with shape k and mean 1/rate have a coefficient of variation 1/sqrt(k): k = 1 is
Poisson, k < 1 burstier, k > 1 more regular (vLLM's `--burstiness`). The times come from `seed` alone, so
two runs (or two tools given the same times) offer the same load.
"""

from __future__ import annotations

import random

from llmprod.errors import InputError

ARRIVALS = ("poisson", "gamma", "constant")


def arrival_times(rate: float, count: int, arrival: str = "poisson", burstiness: float = 1.0,
                  seed: int = 0) -> list[float]:
    """Seconds from the level's start at which each of `count` requests is sent; the first at 0."""
    if arrival not in ARRIVALS:
        raise InputError(f"unknown --arrival {arrival!r}", hint=f"use one of {', '.join(ARRIVALS)}")
    if rate <= 0:
        raise InputError(f"a rate of {rate} requests/s offers no load", hint="give positive rates, e.g. --rate 1,2,4")
    if burstiness <= 0:
        raise InputError(f"--burstiness {burstiness} is not positive", hint="1 is Poisson; below 1 is burstier")
    rng = random.Random(seed)
    shape = 1.0 if arrival == "poisson" else burstiness
    times, t = [], 0.0
    for i in range(count):
        times.append(t)
        if arrival == "constant":
            t = (i + 1) / rate
        else:
            t += rng.gammavariate(shape, 1.0 / (rate * shape))
    return times
