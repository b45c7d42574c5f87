"""Exceptions the worker records as a job's failure reason.

Their class names appear in ``FailedJobRegistry`` tracebacks and their short names label the
``status`` of ended jobs in the metrics, so they are part of what users see.
"""

from __future__ import annotations


class PoolqError(Exception):
    """Base class of the worker's own failure reasons."""


class FunctionNotAllowed(PoolqError):
    """The job names a function outside ``WORKER_ALLOWED_FUNCTIONS``; it was not imported or run."""


class ChildCrashed(PoolqError):
    """The pool child running the job died (segfault, ``os._exit``, OOM kill)."""


class RemoteTraceback(Exception):
    """Carries the pool child's traceback text as the ``__cause__`` of :class:`RemoteJobError`."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nTraceback in the pool child:\n{self.tb}"


class RemoteJobError(PoolqError):
    """The job raised in a pool child; the original traceback is chained as the cause."""


class MalformedJob(PoolqError):
    """The job hash in Redis could not be read (bad fields, undecodable data)."""


class JobTooLarge(MalformedJob):
    """The job hash, or its payload once inflated, is larger than ``WORKER_MAX_JOB_BYTES``."""


class WrongTypeKey(MalformedJob):
    """A key of the job (its hash, its results stream, ...) holds another Redis type."""


class UnserializableResult(PoolqError):
    """The job returned a value the configured serializer cannot store."""


class AbandonedJob(PoolqError):
    """The worker running the job died and the job ran out of redeliveries."""


class RequeueJob(PoolqError):
    """Raised by a strategy's ``perform``: the job was stopped through no fault of its own (a hybrid
    child killed to stop an overdue job beside it; a cold stop). The lifecycle puts it back at the
    front of its queue (status ``requeued``) instead of failing it."""


class ShutdownRequeued(PoolqError):
    """Internal: the job did not finish within the shutdown timeout and was re-queued."""


class ColdShutdown(BaseException):
    """Raised in the main thread by a second stop signal while it runs a job (inline strategy)."""
