"""What the worker reports to its hooks: one frozen dataclass per kind of event.

An event is a value, not a string with keyword arguments: a hook reads ``event.reason``, mypy
checks that every field it reads exists, and the list of kinds is this module. Each class
names the :class:`~worker.hooks.Hooks` method it goes to (``hook``) and the name it is counted
under in ``poolq_worker_events`` (``name``). Adding one: a dataclass here, a no-op method of
that name in ``Hooks`` (and its line in ``HookChain``), then emit it with ``hooks.emit(...)``.

The statuses of ended jobs are defined here only (:data:`END_STATUSES`): metrics, hooks and
docs read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

if TYPE_CHECKING:
    from rq.job import Job

# How a job execution ended in this worker (the ``status`` label of ``poolq_jobs_ended``).
EndStatus = Literal["finished", "failed", "timed_out", "crashed", "retried", "abandoned", "requeued", "rejected"]
END_STATUSES: tuple[EndStatus, ...] = get_args(EndStatus)
# Executions that did not run to an end in this worker: their times say nothing about the job.
UNTIMED_STATUSES: frozenset[EndStatus] = frozenset({"requeued", "abandoned"})

# Why a pool child was replaced (the ``reason`` label of ``poolq_pool_children_replaced``).
ReplaceReason = Literal["crashed", "timed_out", "max_jobs", "memory"]
REPLACE_REASONS: tuple[ReplaceReason, ...] = get_args(ReplaceReason)

RecoveryOutcome = Literal["requeued", "abandoned"]
RECOVERY_OUTCOMES: tuple[RecoveryOutcome, ...] = get_args(RecoveryOutcome)


@dataclass(frozen=True)
class Event:
    """Base of the counted events (those without a job): ``name`` is the metrics label."""

    name: ClassVar[str]
    hook: ClassVar[str]


@dataclass(frozen=True)
class JobStarted:
    """A job was dequeued and is about to run."""

    job: Job
    queue: str


@dataclass(frozen=True)
class JobEnded:
    """A job execution ended; ``pool`` names the pool that ran it (auto: its sub-pool)."""

    job: Job
    queue: str
    status: EndStatus
    run_seconds: float
    wait_seconds: float | None
    total_seconds: float | None
    pool: str


@dataclass(frozen=True)
class ChildReplaced(Event):
    """A pool child was replaced (a crash, a timeout, its job or memory budget)."""

    name: ClassVar[str] = "child_replaced"
    hook: ClassVar[str] = "on_child_replaced"
    reason: str


@dataclass(frozen=True)
class RunawayThread(Event):
    """A thread-pool job overran its timeout: failed, its thread abandoned and replaced."""

    name: ClassVar[str] = "runaway_thread"
    hook: ClassVar[str] = "on_runaway_thread"


@dataclass(frozen=True)
class RedisError(Event):
    """A Redis error the dequeue loop or a job's lifecycle rode out."""

    name: ClassVar[str] = "redis_error"
    hook: ClassVar[str] = "on_redis_error"


@dataclass(frozen=True)
class MalformedJob(Event):
    """A job whose hash could not be loaded was failed with the reason."""

    name: ClassVar[str] = "malformed_job"
    hook: ClassVar[str] = "on_malformed_job"
    queue: str


@dataclass(frozen=True)
class Recovered(Event):
    """A job of a dead worker was re-queued, or failed as abandoned."""

    name: ClassVar[str] = "recovered"
    hook: ClassVar[str] = "on_recovered"
    outcome: RecoveryOutcome
    queue: str
    function: str | None


@dataclass(frozen=True)
class RouteChanged(Event):
    """auto: a function's class changed, so its jobs now go to ``pool``."""

    name: ClassVar[str] = "route_changed"
    hook: ClassVar[str] = "on_route_changed"
    function: str
    pool: str


@dataclass(frozen=True)
class LeftToRecovery(Event):
    """Stopping while Redis was unreachable: a job's outcome was left to recovery."""

    name: ClassVar[str] = "left_to_recovery"
    hook: ClassVar[str] = "on_left_to_recovery"


# Every counted event, in the order metrics create their zero-valued series.
EVENTS: tuple[type[Event], ...] = (
    ChildReplaced,
    RunawayThread,
    RedisError,
    MalformedJob,
    Recovered,
    RouteChanged,
    LeftToRecovery,
)
