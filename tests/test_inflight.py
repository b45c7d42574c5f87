"""The in-flight table (worker/inflight.py): a job is ended by one of its enders, its slot freed once.

The slot, the monitor and the drain may each try to end the same job at the same moment; a
slot given back twice would let the worker run more jobs than its capacity (prefetch by
another name), a slot never given back would shrink the pool for good.
"""

from __future__ import annotations

import threading
from typing import Any

from worker.inflight import InFlight, Ticket


def ticket() -> Ticket:
    fake: Any = object()
    return Ticket(job=fake, queue=fake, enqueued_at=None)


def test_a_job_ended_by_many_threads_frees_its_slot_once() -> None:
    table = InFlight(2)
    assert table.take(None) and table.take(None)
    assert not table.take(None)  # both slots held
    t = ticket()
    table.add(t)
    start = threading.Barrier(8)

    def end() -> None:
        start.wait()
        table.end(t)

    threads = [threading.Thread(target=end) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(table) == 0
    assert table.take(None)  # exactly one slot came back
    assert not table.take(None)


def test_only_the_first_claim_wins() -> None:
    t = ticket()
    wins = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        wins.append(t.claim())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert t.claimed


def test_a_forgotten_ticket_keeps_its_slot_until_it_is_ended() -> None:
    """A re-queued job leaves the table at once (the drain stops waiting for it); its slot
    comes back when its slot thread ends it."""
    table = InFlight(1)
    assert table.take(None)
    t = ticket()
    table.add(t)
    table.forget(t)
    assert not table and not table.take(None)
    table.end(t)
    assert table.take(None)


def test_give_back_returns_slots_taken_for_jobs_that_never_came() -> None:
    table = InFlight(3)
    assert all(table.take(None) for _ in range(3))
    table.give_back(2)
    assert table.take(None) and table.take(None) and not table.take(None)


def test_wait_changed_says_when_a_burst_may_quit() -> None:
    table = InFlight(1)
    assert table.wait_changed(0.01) is False  # nothing runs: quit
    t = ticket()
    table.add(t)
    assert table.wait_changed(0.01) is True
