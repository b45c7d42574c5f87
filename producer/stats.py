"""The few statistics every report here uses: percentiles, medians over repeats, grouping.

One copy for the producer and ``bench/``, so that "p95" and "the median of the repeats" mean
the same wherever a number is printed.

- :func:`percentile`: linear interpolation between order statistics (numpy's default), or the
  nearest rank (``method="nearest-rank"``: always one of the measured values; what
  ``bench/`` has always printed, so its tables stay comparable with older runs).
- :func:`median_of`: the median of whatever is a finite number (None, NaN, text are skipped):
  a repeat that measured nothing must not turn the median into NaN.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

Method = Literal["linear", "nearest-rank"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def percentile(values: Sequence[float], q: float, method: Method = "linear") -> float:
    """The q-th percentile (0..100) of ``values`` (any order); NaN for no values."""
    if not len(values):
        return math.nan
    arr = np.asarray(values, dtype=float)
    if method == "nearest-rank":  # the smallest value with at least q % of the values at or below it
        return float(np.percentile(arr, q, method="inverted_cdf"))
    return float(np.percentile(arr, q))


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def median_of(values: Iterable[Any]) -> float | None:
    """The median of the finite numbers among ``values``; None when there are none."""
    nums = [n for n in (finite(v) for v in values) if n is not None]
    return statistics.median(nums) if nums else None


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items by ``key``, in the order each key was first seen (the repeats of one cell, say)."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
