"""When each job arrives: all at once, at a constant rate, or as a Poisson process.

A schedule is a list of offsets in seconds from the start, one per job, non-decreasing. The
enqueue loop sends every job whose offset has passed in one pipeline, so a late producer
catches up in batches instead of drifting further behind.
"""

from __future__ import annotations

import math
import random

from producer.errors import BadInput

ARRIVALS = ("burst", "constant", "poisson")


def resolve_arrival(arrival: str | None, rate: float | None) -> str:
    """The arrival process from the flags: ``burst`` without a rate, ``constant`` with one."""
    if rate is not None and (not math.isfinite(rate) or rate <= 0):
        raise BadInput(f"--rate must be a positive number of jobs per second, got {rate:g}")
    if arrival is None:
        return "burst" if rate is None else "constant"
    if arrival not in ARRIVALS:
        raise BadInput(f"unknown arrival {arrival!r} (choose from {', '.join(ARRIVALS)})")
    if arrival == "burst" and rate is not None:
        raise BadInput("--arrival burst sends every job at once: it takes no --rate (use constant or poisson)")
    if arrival != "burst" and rate is None:
        raise BadInput(f"--arrival {arrival} needs --rate (jobs per second)")
    return arrival


def schedule(arrival: str, count: int, rate: float | None, rng: random.Random) -> list[float]:
    """Offsets (seconds from the start) at which each of ``count`` jobs is due."""
    if arrival == "burst" or rate is None:
        return [0.0] * count
    if arrival == "constant":
        return [i / rate for i in range(count)]
    if arrival == "poisson":
        offsets, t = [], 0.0
        for i in range(count):
            if i:
                t += rng.expovariate(rate)
            offsets.append(t)
        return offsets
    raise BadInput(f"unknown arrival {arrival!r} (choose from {', '.join(ARRIVALS)})")
