"""How numbers are printed in reports: an em dash for anything that was not measured."""

from __future__ import annotations

import math
from typing import Any


def f(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "—"
    return f"{v:,.{digits}f}{unit}"


def rate(x: float | None) -> str:
    """Jobs/s: whole numbers from 100 up, one decimal below."""
    if x is None:
        return "—"
    v = float(x)
    return f(v, 0) if v >= 100 else f(v, 1)


def ms(x: float | None) -> str:
    """Seconds printed as milliseconds: whole from 100 ms up, one decimal below."""
    if x is None:
        return "—"
    v = float(x) * 1000
    return f(v, 0) if v >= 100 else f(v, 1)
