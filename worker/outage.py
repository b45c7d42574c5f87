"""Riding out a Redis outage, but never past the worker's stop deadline.

Every Redis command of the worker retries connection errors with backoff (20 times, ~33 s per
command: :func:`worker.cli.connect`), and a job's outcome waits up to 10 minutes for Redis
(``RedisRetry.run``, worker/lifecycle/retrying.py). Both are right while the worker runs and wrong once it is asked
to stop: with Redis gone, a SIGTERM'd worker spent ~33 s on *each* job it tried to re-queue and
on its own death record, and was still running 90 s later.

A :class:`StopGate` is the one question all those loops ask: "stop retrying now?". The worker
answers it (``RedisRetry.stop_retrying``): not before a stop is requested; after it, only while
jobs still run and the shutdown timeout has not passed. What could not be written then stays
where recovery finds it (the started registry, the intermediate list).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.exceptions
from redis.backoff import AbstractBackoff
from redis.retry import Retry

T = TypeVar("T")

# Longest single sleep of a retry loop: how late a stop request or a deadline is noticed.
NAP_STEP_SECONDS = 0.1


class LeftToRecovery(redis.exceptions.ConnectionError):
    """Redis is unreachable and the worker is stopping: this write is given up, not retried.

    The job it was for stays where recovery finds it (the started registry, the intermediate
    list); a live worker re-queues it once this worker's heartbeat is older than its TTL.
    """


class StopGate:
    """Whether retrying should end now, and when it will at the latest (``time.monotonic``).

    Until :meth:`bind` is called (before the worker exists, or outside a worker) it never
    says stop: the client behaves as a plain retrying client.
    """

    def __init__(self) -> None:
        self._give_up: Callable[[], bool] = lambda: False
        self._deadline: Callable[[], float] = lambda: float("inf")

    def bind(self, give_up: Callable[[], bool], deadline: Callable[[], float]) -> None:
        self._give_up = give_up
        self._deadline = deadline

    def give_up(self) -> bool:
        return self._give_up()

    def nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less: until the deadline, or until :meth:`give_up` says so."""
        end = time.monotonic() + seconds
        while True:
            left = min(end, self._deadline()) - time.monotonic()
            if left <= 0 or self.give_up():
                return
            time.sleep(min(left, NAP_STEP_SECONDS))


class StopAwareRetry(Retry):
    """redis-py's ``Retry`` whose retries end when its :class:`StopGate` says so.

    redis-py deep-copies a client's ``Retry`` into every connection; the copies keep the same
    gate (a gate is state of the worker, not of a connection).
    """

    # Set by redis-py's Retry (its type stubs do not declare them).
    _backoff: AbstractBackoff
    _retries: int
    _supported_errors: tuple[type[Exception], ...]

    def __init__(self, backoff: AbstractBackoff, retries: int, gate: StopGate) -> None:
        super().__init__(backoff, retries)
        self.gate = gate

    def __deepcopy__(self, memo: dict[int, Any]) -> StopAwareRetry:
        twin = StopAwareRetry(copy.deepcopy(self._backoff, memo), self._retries, self.gate)
        twin._supported_errors = self._supported_errors
        return twin

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """As redis-py's, but the gate is asked before each retry and bounds each backoff sleep."""
        self._backoff.reset()
        failures = 0
        while True:
            try:
                return do()
            except self._supported_errors as error:
                if is_retryable and not is_retryable(error):
                    raise
                failures += 1
                if with_failure_count:
                    fail(error, failures)
                else:
                    fail(error)
                if (self._retries >= 0 and failures > self._retries) or self.gate.give_up():
                    raise error
                self.gate.nap(self._backoff.compute(failures))
