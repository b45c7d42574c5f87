"""Erlang C / M/M/c against independently computed values.

Three independent references: textbook closed forms (M/M/1, c=2), the explicit Erlang C sum
formula evaluated with exact fractions (not the recursion the code uses), and a discrete-event
simulation of the same queue (FIFO, c servers, Poisson arrivals, exponential or constant
service), seeded so it is reproducible.
"""

from __future__ import annotations

import heapq
import math
import random
from fractions import Fraction

import pytest

from producer.erlang import MMc, erlang_b, erlang_c, mgc_mean_wait, mgc_wait_quantile


def erlang_c_explicit(c: int, a: Fraction) -> Fraction:
    """Textbook formula: (a^c/c!) (c/(c-a)) / (sum_{k<c} a^k/k! + (a^c/c!) (c/(c-a)))."""
    top = a**c / math.factorial(c) * Fraction(c) / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def simulate(
    lam: float, c: int, service: str, mean_service: float, n: int, seed: int
) -> tuple[list[float], list[float]]:
    """FIFO M/M/c (service="exp") or M/D/c (service="const"): each job's wait and time in system."""
    rng = random.Random(seed)
    free_at = [0.0] * c  # a heap of the times each server becomes free
    t = 0.0
    waits, totals = [], []
    for _ in range(n):
        t += rng.expovariate(lam)
        earliest = heapq.heappop(free_at)
        start = max(t, earliest)
        s = rng.expovariate(1.0 / mean_service) if service == "exp" else mean_service
        heapq.heappush(free_at, start + s)
        waits.append(start - t)
        totals.append(start + s - t)
    warm = n // 20  # drop the start-up transient (an empty system at t=0)
    return waits[warm:], totals[warm:]


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def test_textbook_two_servers() -> None:
    # c = 2, lam = 1, mu = 1: a = 1, rho = 1/2, Erlang B = 1/5, Erlang C = 1/3.
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    m = MMc(1.0, 1.0, 2)
    assert m.rho == pytest.approx(0.5)
    assert m.p_wait == pytest.approx(1 / 3)
    assert m.mean_wait == pytest.approx((1 / 3) / (2 - 1))  # C / (c mu - lam)
    assert m.mean_queue_length == pytest.approx(1 / 3)


def test_mm1_closed_forms() -> None:
    lam, mu = 0.7, 1.0
    m = MMc(lam, mu, 1)
    rho = lam / mu
    assert m.p_wait == pytest.approx(rho)  # an M/M/1 job waits iff the server is busy
    assert m.mean_wait == pytest.approx(rho / (mu - lam))
    # P(W > t) = rho exp(-(mu - lam) t); time in system is Exp(mu - lam).
    assert m.wait_quantile(0.95) == pytest.approx(math.log(rho / 0.05) / (mu - lam))
    assert m.sojourn_quantile(0.95) == pytest.approx(math.log(20) / (mu - lam), rel=1e-6)
    assert m.sojourn_survival(2.0) == pytest.approx(math.exp(-(mu - lam) * 2.0), rel=1e-9)


@pytest.mark.parametrize(
    ("c", "a"),
    [(1, Fraction(1, 2)), (2, Fraction(3, 2)), (4, Fraction(3)), (10, Fraction(8)), (20, Fraction(37, 2)),
     (50, Fraction(45))],
)  # fmt: skip
def test_erlang_c_matches_the_explicit_formula(c: int, a: Fraction) -> None:
    assert erlang_c(c, float(a)) == pytest.approx(float(erlang_c_explicit(c, a)), rel=1e-9)


def test_published_value() -> None:
    # The classic call-centre example: 10 Erlangs offered to 11 agents -> P(wait) = 0.6821.
    assert erlang_c(11, 10.0) == pytest.approx(0.6821, abs=5e-5)


def test_edges() -> None:
    assert erlang_c(3, 0.0) == 0.0
    assert erlang_c(3, 3.0) == 1.0  # unstable: everyone waits
    m = MMc(5.0, 1.0, 4)
    assert not m.stable
    assert m.wait_quantile(0.95) == math.inf
    assert MMc(0.1, 1.0, 8).wait_quantile(0.95) == 0.0  # fewer than 5% of the jobs wait at all
    with pytest.raises(ValueError):
        MMc(1.0, 0.0, 1)
    with pytest.raises(ValueError):
        erlang_c(0, 1.0)


@pytest.mark.parametrize(("c", "lam"), [(1, 0.8), (3, 2.4), (8, 6.0)])
def test_mmc_against_a_simulation(c: int, lam: float) -> None:
    mu = 1.0
    m = MMc(lam, mu, c)
    waits, totals = simulate(lam, c, "exp", 1.0 / mu, 300_000, seed=c)
    p_wait = sum(1 for w in waits if w > 0) / len(waits)
    assert p_wait == pytest.approx(m.p_wait, abs=0.015)
    assert sum(waits) / len(waits) == pytest.approx(m.mean_wait, rel=0.06)
    assert quantile(waits, 0.95) == pytest.approx(m.wait_quantile(0.95), rel=0.06)
    assert quantile(waits, 0.99) == pytest.approx(m.wait_quantile(0.99), rel=0.08)
    assert quantile(totals, 0.95) == pytest.approx(m.sojourn_quantile(0.95), rel=0.05)


@pytest.mark.parametrize(("c", "lam"), [(4, 3.2), (16, 14.4)])
def test_allen_cunneen_approximates_constant_service(c: int, lam: float) -> None:
    """M/D/c: the correction with CV^2 = 0 lands near the simulation; plain M/M/c is ~2x too high."""
    m = MMc(lam, 1.0, c)
    waits, _ = simulate(lam, c, "const", 1.0, 300_000, seed=100 + c)
    p95 = quantile(waits, 0.95)
    assert mgc_wait_quantile(m, 0.95, 0.0) == pytest.approx(p95, rel=0.25)
    assert m.wait_quantile(0.95) > 1.6 * p95
    assert mgc_mean_wait(m, 0.0) == pytest.approx(sum(waits) / len(waits), rel=0.2)
    assert mgc_wait_quantile(m, 0.95, 1.0) == m.wait_quantile(0.95)  # exponential: no change
