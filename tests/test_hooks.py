"""Hooks and typed events (worker/hooks.py, worker/events.py), in process, no Redis.

The chain is the one guarantee a plug-in author relies on: every event reaches the method
named for it, a failing hook is logged and never stops the others, and end hooks run in
reverse order.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from worker import events
from worker.hooks import HookChain, Hooks
from worker.metrics import STATUSES, Metrics


class Recorder(Hooks):
    def __init__(self, label: str, calls: list[tuple[str, str, Any]]) -> None:
        self.label = label
        self.calls = calls

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):

            def record(worker: Any, event: Any = None) -> None:
                object.__getattribute__(self, "calls").append((object.__getattribute__(self, "label"), name, event))

            return record
        return object.__getattribute__(self, name)


class Failing(Hooks):
    def on_job_end(self, worker: Any, event: events.JobEnded) -> None:
        raise RuntimeError("boom")

    def on_child_replaced(self, worker: Any, event: events.ChildReplaced) -> None:
        raise RuntimeError("boom")


def sample(cls: type[events.Event]) -> events.Event:
    values = {"reason": "crashed", "queue": "q", "outcome": "requeued", "function": "f", "pool": "thread"}
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def test_every_event_reaches_its_named_method_of_every_hook() -> None:
    calls: list[tuple[str, str, Any]] = []
    chain = HookChain([Recorder("a", calls), Recorder("b", calls)])
    for cls in events.EVENTS:
        event = sample(cls)
        chain.emit(None, event)
        assert calls == [("a", cls.hook, event), ("b", cls.hook, event)]
        assert hasattr(Hooks, cls.hook)
        calls.clear()


def test_end_hooks_run_in_reverse_and_start_hooks_in_order() -> None:
    calls: list[tuple[str, str, Any]] = []
    chain = HookChain([Recorder("a", calls), Recorder("b", calls)])
    chain.on_worker_start(None)  # type: ignore[arg-type]
    chain.on_job_start(None, None)  # type: ignore[arg-type]
    chain.on_job_end(None, None)  # type: ignore[arg-type]
    chain.on_worker_stop(None)  # type: ignore[arg-type]
    assert [(label, name) for label, name, _ in calls] == [
        ("a", "on_worker_start"),
        ("b", "on_worker_start"),
        ("a", "on_job_start"),
        ("b", "on_job_start"),
        ("b", "on_job_end"),
        ("a", "on_job_end"),
        ("b", "on_worker_stop"),
        ("a", "on_worker_stop"),
    ]


def test_a_failing_hook_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str, Any]] = []
    chain = HookChain([Recorder("a", calls), Failing(), Recorder("b", calls)])
    with caplog.at_level(logging.ERROR, logger="worker.hooks"):
        chain.emit(None, events.ChildReplaced("memory"))
        chain.on_job_end(None, None)  # type: ignore[arg-type]
    assert [(label, name) for label, name, _ in calls] == [
        ("a", "on_child_replaced"),
        ("b", "on_child_replaced"),
        ("b", "on_job_end"),
        ("a", "on_job_end"),
    ]
    failed = [r.getMessage() for r in caplog.records]
    assert failed == ["hook Failing.on_child_replaced failed (ignored)", "hook Failing.on_job_end failed (ignored)"]


def test_metrics_count_every_typed_event_under_its_name() -> None:
    m = Metrics("thread", 4, 2, ["q"])
    chain = HookChain([m])
    for cls in events.EVENTS:
        chain.emit(None, sample(cls))
    for cls in events.EVENTS:
        assert m.registry.get_sample_value("poolq_worker_events_total", {"strategy": "thread", "event": cls.name}) == 1
    labels = {"strategy": "thread", "reason": "crashed"}
    assert m.registry.get_sample_value("poolq_pool_children_replaced_total", labels) == 1
    assert m.registry.get_sample_value("poolq_malformed_jobs_total", {"strategy": "thread", "queue": "q"}) == 1


def test_the_statuses_of_ended_jobs_are_defined_once() -> None:
    assert STATUSES is events.END_STATUSES
    assert set(events.END_STATUSES) >= events.UNTIMED_STATUSES
