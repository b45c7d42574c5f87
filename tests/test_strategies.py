"""The Strategy interface as the dequeue loop sees it, without a worker: how many jobs one
dequeue may take, and what a second signal does in the main thread. The loop asks these of
every strategy alike (it never asks which strategy it has)."""

from __future__ import annotations

import pytest

from worker.errors import ColdShutdown
from worker.strategies import STRATEGIES, StrategyConfig


def config() -> StrategyConfig:
    return StrategyConfig(available_cpus=2, concurrency=4, threads_per_cpu=4, processes=1)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_dequeue_batch_is_bounded_by_the_capacity_and_auto_takes_one(name: str) -> None:
    strategy = STRATEGIES[name](config())
    batch = strategy.dequeue_batch(16)
    assert 1 <= batch <= min(16, strategy.capacity)
    # auto holds the loop back in admit() before each job: a batch would sit unplaced
    assert batch == (1 if name == "auto" else min(16, strategy.capacity))
    assert strategy.dequeue_batch(1) == 1


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_cold_stop_interrupts_only_a_job_running_in_the_main_thread(name: str) -> None:
    strategy = STRATEGIES[name](config())
    strategy.cold_stop()  # no job runs: nothing to interrupt, for every strategy
    if name != "inline":
        return  # their jobs run elsewhere: kill_running() stops them once the drain claimed them
    reached = []

    def job_in_the_main_thread() -> None:
        strategy.cold_stop()  # as the signal handler does while the job runs
        reached.append("after")

    with pytest.raises(ColdShutdown):
        strategy.submit(job_in_the_main_thread)
    assert reached == []
    strategy.cold_stop()  # the job is over: nothing to interrupt again
