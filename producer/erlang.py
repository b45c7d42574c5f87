"""M/M/c queueing (Erlang C), and the M/G/c correction the planner prints next to it.

M/M/c: jobs arrive as a Poisson process of rate ``lam``; ``c`` identical servers (pool slots
of all replicas together) each finish jobs at rate ``mu`` with exponentially distributed
service times; one FIFO queue (RQ's list, shared by every worker that consumes it).

- offered load ``a = lam / mu`` (Erlangs), utilisation ``rho = a / c`` (stable iff rho < 1);
- Erlang C, the probability that a job waits: ``C(c, a) = B / (1 - rho (1 - B))`` with ``B``
  the Erlang B blocking probability, computed with the stable recursion
  ``B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1))``;
- waiting time: ``P(W > t) = C exp(-(c mu - lam) t)``, so the mean wait is ``C / (c mu - lam)``
  and the q-quantile is ``max(0, ln(C / (1 - q)) / (c mu - lam))``;
- time in system ``T = W + S`` with ``S ~ Exp(mu)`` independent of ``W``.

M/G/c (Allen-Cunneen): service times that are not exponential change the waits roughly in
proportion to ``(1 + cs2) / 2`` where ``cs2`` is the squared coefficient of variation of the
service time (1 for exponential, 0 for constant). :func:`mgc_wait_quantile` keeps Erlang C's
probability of waiting and scales the conditional wait by that factor. It is an approximation
(exact for M/M/c; good for M/D/c at moderate and high load), stated as such wherever printed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(c: int, a: float) -> float:
    """Erlang B: probability that all ``c`` servers are busy in M/M/c/c with offered load ``a``."""
    if c < 0 or a < 0:
        raise ValueError("erlang_b needs c >= 0 and a >= 0")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Erlang C: probability that an arriving job waits (M/M/c, offered load ``a`` Erlangs).

    1.0 when the queue is unstable (``a >= c``).
    """
    if c < 1:
        raise ValueError("erlang_c needs at least one server")
    if a < 0:
        raise ValueError("offered load must be >= 0")
    if a >= c:
        return 1.0
    if a == 0:
        return 0.0
    b = erlang_b(c, a)
    rho = a / c
    return b / (1.0 - rho * (1.0 - b))


@dataclass(frozen=True)
class MMc:
    lam: float  # arrivals per second
    mu: float  # completions per second of one server
    c: int  # servers

    def __post_init__(self) -> None:
        if self.lam < 0 or self.mu <= 0 or self.c < 1:
            raise ValueError("M/M/c needs lam >= 0, mu > 0 and c >= 1")

    @property
    def offered_load(self) -> float:
        return self.lam / self.mu

    @property
    def rho(self) -> float:
        return self.lam / (self.c * self.mu)

    @property
    def stable(self) -> bool:
        return self.rho < 1.0

    @property
    def p_wait(self) -> float:
        return erlang_c(self.c, self.offered_load)

    @property
    def _drain(self) -> float:
        """Rate at which a queue drains when every server is busy: c mu - lam."""
        return self.c * self.mu - self.lam

    @property
    def mean_wait(self) -> float:
        return self.p_wait / self._drain if self.stable else math.inf

    @property
    def mean_queue_length(self) -> float:
        return self.lam * self.mean_wait

    @property
    def mean_sojourn(self) -> float:
        return self.mean_wait + 1.0 / self.mu

    def wait_survival(self, t: float) -> float:
        """P(W > t)."""
        if not self.stable:
            return 1.0
        if t < 0:
            return 1.0
        return self.p_wait * math.exp(-self._drain * t)

    def wait_quantile(self, q: float) -> float:
        """The q-quantile of the waiting time (0 when fewer than 1 - q of the jobs wait)."""
        if not 0 < q < 1:
            raise ValueError("q must be in (0, 1)")
        if not self.stable:
            return math.inf
        pw = self.p_wait
        if pw <= 1 - q:
            return 0.0
        return math.log(pw / (1 - q)) / self._drain

    def sojourn_survival(self, t: float) -> float:
        """P(W + S > t) with S ~ Exp(mu) independent of W."""
        if not self.stable:
            return 1.0
        if t <= 0:
            return 1.0
        mu, d, pw = self.mu, self._drain, self.p_wait
        no_wait = math.exp(-mu * t)
        if abs(d - mu) < 1e-12 * max(d, mu):
            hypo = (1.0 + mu * t) * math.exp(-mu * t)
        else:
            hypo = (d * math.exp(-mu * t) - mu * math.exp(-d * t)) / (d - mu)
        return (1.0 - pw) * no_wait + pw * hypo

    def sojourn_quantile(self, q: float) -> float:
        if not 0 < q < 1:
            raise ValueError("q must be in (0, 1)")
        if not self.stable:
            return math.inf
        lo, hi = 0.0, 1.0 / self.mu
        while self.sojourn_survival(hi) > 1 - q:
            hi *= 2
        for _ in range(200):
            mid = (lo + hi) / 2
            if self.sojourn_survival(mid) > 1 - q:
                lo = mid
            else:
                hi = mid
        return hi


def mgc_wait_quantile(model: MMc, q: float, cs2: float) -> float:
    """Allen-Cunneen M/G/c approximation of the q-quantile of the wait.

    P(W > 0) is Erlang C; given that a job waits, its wait is taken as exponential with the
    M/M/c conditional mean scaled by ``(1 + cs2) / 2``.
    """
    if cs2 < 0:
        raise ValueError("cs2 must be >= 0")
    base = model.wait_quantile(q)
    if base in (0.0, math.inf):
        return base
    return base * (1.0 + cs2) / 2.0


def mgc_mean_wait(model: MMc, cs2: float) -> float:
    return model.mean_wait * (1.0 + cs2) / 2.0
