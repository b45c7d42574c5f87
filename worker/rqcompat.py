"""Everything poolq takes from RQ beyond its public API, in one place.

poolq writes RQ's data model with RQ's own functions, but a few of them are private
(``Job._handle_success``, ``Queue._enqueue_job``, ``BaseWorker._finalize_success``), a few
keys are built by hand where RQ offers no function (a dead worker's executions), and a few
RQ module globals are replaced in this process (fast paths, a capped zlib, the registry's
death penalty). An RQ upgrade is checked here: every name below is RQ 3's, and
tests/test_rqcompat.py proves that no other module of ``worker`` touches RQ's private members.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Any, cast

from rq.defaults import RQ_KEY_PREFIX

if TYPE_CHECKING:
    import redis
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue
    from rq.worker import BaseWorker

# ---------------------------------------------------------------------- key formats
# RQ builds these inside its classes (Execution.key, BaseWorker.key, ExecutionRegistry); recovery
# needs them for workers and executions it has no object of (a dead worker's).


def worker_key(name: str) -> str:
    """A worker's hash (``BaseWorker.key``)."""
    return f"{RQ_KEY_PREFIX}:worker:{name}"


def worker_executions_key(name: str) -> str:
    """A worker's execution index (``Execution.worker_executions_key``)."""
    return f"{RQ_KEY_PREFIX}:worker:{name}:executions"


def execution_key(composite_key: str) -> str:
    """An execution's hash; ``composite_key`` is ``<job id>:<execution id>`` (``Execution.key``)."""
    return f"{RQ_KEY_PREFIX}:execution:{composite_key}"


def job_executions_key(job_id: str) -> str:
    """A job's execution registry (``ExecutionRegistry.key``)."""
    return f"{RQ_KEY_PREFIX}:executions:{job_id}"


# ---------------------------------------------------------------------- private members of jobs


CALLBACK_KINDS = ("success", "failure", "stopped")


def callback_name(job: Job, kind: str) -> str | None:
    """A callback's dotted name (``kind`` in :data:`CALLBACK_KINDS`), without importing it
    (``job.success_callback`` would)."""
    name = getattr(job, f"_{kind}_callback_name", None)
    return name if name else None


def callback_timeout(job: Job, kind: str) -> Any:
    """A callback's timeout as the hash gave it (None: RQ's default)."""
    return getattr(job, f"_{kind}_callback_timeout", None)


def dependency_ids(job: Job) -> Any:
    """The ids as decoded from the hash, unchecked (``job.dependency_ids`` converts them)."""
    return job._dependency_ids


def mark_finished(job: Job, return_value: Any) -> None:
    """What ``BaseWorker._finalize_success`` sets on the job before ``Job._handle_success``."""
    from rq.job import JobStatus

    job._result = return_value
    job._status = JobStatus.FINISHED


def handle_success(
    job: Job,
    result_ttl: int,
    pipeline: redis.client.Pipeline[bytes],
    worker_name: str,
    execution: Execution,
    ended_at: dt.datetime,
) -> None:
    """RQ's writes for a finished job (hash, Result entry, finished registry) into ``pipeline``."""
    job._handle_success(
        result_ttl,
        pipeline=pipeline,
        worker_name=worker_name,
        execution_id=execution.id,
        execution_started_at=execution.created_at,
        execution_ended_at=ended_at,
    )


def enqueue_at_front(queue: Queue, job: Job, pipeline: redis.client.Pipeline[bytes]) -> None:
    """Put an already-registered job back at the front of its queue (no re-creation, no dependency check)."""
    queue._enqueue_job(job, pipeline=pipeline, at_front=True)


# ---------------------------------------------------------------------- private members of workers


def finalize_success(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
    """RQ's whole success path (Retry results, callbacks, repeats, dependents)."""
    worker._finalize_success(job, queue, execution, return_value)


def finalize_failure(worker: BaseWorker, job: Job, queue: Queue, execution: Execution | None, exc_info: Any) -> None:
    """RQ's whole failure path (Retry, failure callback, FailedJobRegistry with the traceback)."""
    # execution is None when the job failed before it was registered; RQ handles that, though
    # it types the parameter as an Execution.
    worker._finalize_failure(job, queue, cast("Execution", execution), exc_info)


def note_shutdown_requested(worker: BaseWorker) -> None:
    """The date RQ shows for a requested shutdown (``BaseWorker.set_shutdown_requested_date``)."""
    from rq.utils import now

    worker._shutdown_requested_date = now()


# ---------------------------------------------------------------------- process-wide patches


def bound_registry_callbacks(death_penalty_class: type[Any]) -> None:
    """RQ's registry clean-up runs abandoned jobs' failure callbacks under its own death penalty
    class, SIGALRM by default: main thread only. The monitor thread runs it, so a thread-safe one."""
    from rq.registry import StartedJobRegistry

    registry: Any = StartedJobRegistry  # RQ types the attribute as SIGALRM's class
    registry.death_penalty_class = death_penalty_class


def replace_zlib(stand_in: Any, kind: type[Any]) -> None:
    """Point ``zlib`` in ``rq.job`` (``data``, ``exc_info``) and ``rq.results`` (``exc_string``) at
    ``stand_in``; one of ``kind`` already there is updated in place (``limit``) instead."""
    import rq.job
    import rq.results

    for module in (rq.job, rq.results):
        current = module.__dict__.get("zlib")
        if isinstance(current, kind):
            current.limit = stand_in.limit
        else:
            module.__dict__["zlib"] = stand_in


def replace_scheduler_job_class(job_class: type[Job]) -> None:
    """``rq.scheduler`` reads due jobs with the module's ``Job``: pointed at ``job_class``."""
    import rq.scheduler

    rq.scheduler.__dict__["Job"] = job_class


def install_rq_fast_paths() -> None:
    """Make two of RQ's per-job helpers cheap, with the same results, in this process.

    A py-spy profile of a thread worker on 10,000 no-op jobs (docs/performance.md) put ~10 % of
    the samples holding the GIL in ``rq.serializers.resolve_serializer``: every ``Job``,
    ``Result`` and registry object RQ creates (several per job) checks its serializer with
    ``isinstance(x, Serializer)`` against a runtime-checkable ``Protocol``, which on Python 3.11
    re-lists the protocol's attributes each time. And ~4 % in ``_strptime``: ``Job.restore``
    parses its timestamps with ``datetime.strptime``.

    - ``resolve_serializer`` is memoised per argument (a class, a dotted path, None: each always
      resolves to the same object; unhashable arguments go to RQ's own function);
    - ``utcparse`` takes ``datetime.fromisoformat`` for strings of exactly RQ's own shape
      (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the one ``utcformat`` writes), which gives the same
      aware UTC datetime; anything else goes to RQ's own function (same result, same errors);
    - ``utcformat`` (~8 per job, ~5 % of the samples) uses ``isoformat``, which writes the
      same characters as RQ's ``strftime('%Y-%m-%dT%H:%M:%S.%fZ')`` for years 1000-9999.

    The names are replaced in the ``rq`` modules that imported them; idempotent.
    """
    import rq.serializers
    import rq.utils

    resolve = rq.serializers.resolve_serializer
    if not getattr(resolve, "poolq_fast", False):
        cache: dict[Any, Any] = {}

        def resolve_serializer(serializer: Any = None) -> Any:
            try:
                return cache[serializer]
            except KeyError:
                pass
            except TypeError:  # unhashable: RQ's own check every time
                return resolve(serializer)
            resolved = resolve(serializer)
            if len(cache) < 64:
                cache[serializer] = resolved
            return resolved

        _replace_in_rq("resolve_serializer", resolve, resolve_serializer)

    parse = rq.utils.utcparse
    if not getattr(parse, "poolq_fast", False):
        fromisoformat = dt.datetime.fromisoformat

        def utcparse(string: str) -> dt.datetime:
            if len(string) == 27 and string[10] == "T" and string[19] == "." and string[26] == "Z":
                try:
                    return fromisoformat(string)
                except ValueError:
                    pass
            return parse(string)

        _replace_in_rq("utcparse", parse, utcparse)

    fmt = rq.utils.utcformat
    if not getattr(fmt, "poolq_fast", False):

        def utcformat(value: dt.datetime) -> str:
            if value.year < 1000:
                return fmt(value)
            return value.isoformat(timespec="microseconds")[:26] + "Z"

        _replace_in_rq("utcformat", fmt, utcformat)


def _replace_in_rq(name: str, old: Any, new: Any) -> None:
    new.__dict__["poolq_fast"] = True  # the mark that makes install_rq_fast_paths idempotent
    for module_name, module in list(sys.modules.items()):
        if (module_name == "rq" or module_name.startswith("rq.")) and getattr(module, name, None) is old:
            setattr(module, name, new)


def ordered_queues(worker: BaseWorker) -> list[Queue]:
    """The worker's queues in the order to read them now (``reorder_queues`` rotates them)."""
    queues: list[Queue] = worker._ordered_queues
    return queues
