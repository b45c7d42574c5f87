"""The worker's RQ ``Job`` class: everything a job hash names is resolved through the allowlist.

RQ's ``Job`` resolves a job's function (``job.func``) and its callbacks (``job.success_callback``,
``failure_callback``, ``stopped_callback``) with ``rq.utils.import_attribute``: any importable
name, imported and called. And ``job.send_webhooks`` sends whatever the hash lists. Every path
of RQ's code that the worker runs — ``job.perform()`` in the thread and inline strategies, RQ's
``_finalize_success`` / ``_finalize_failure``, the registries' clean-up — goes through these
attributes of the worker's ``job_class``, so overriding them here gates all of them at once:

- ``func``: resolved by :class:`~worker.allowlist.Allowlist` (defined where its name says);
  a job with an ``instance`` (an RQ bound-method job; from JSON any value, e.g. a ``str`` whose
  ``format`` is callable) is refused;
- callbacks: the same resolver, each wrapped with a thread-safe timeout
  (:func:`worker.callbacks.bounded`);
- webhooks: only to hosts in ``WORKER_WEBHOOK_HOSTS`` (:mod:`worker.webhooks`); a refused one is
  logged once per job at WARNING, without its headers;
- a job refused for any of these (:meth:`GuardedJob.refuse`) gets no callback and no webhook
  at all: nothing of it is imported, called or sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from rq.job import Job, JobStatus

from worker.allowlist import Allowlist, mark_resolved
from worker.callbacks import bounded
from worker.errors import FunctionNotAllowed
from worker.rqcompat import CALLBACK_KINDS, callback_name, callback_timeout
from worker.webhooks import WebhookHosts

log = logging.getLogger("worker.jobs")


class GuardedJob(Job):
    """An RQ ``Job`` whose function, callbacks and webhooks obey the worker's allowlists.

    Configured per worker by :func:`guarded_job_class`; this base admits nothing.
    """

    allowlist: ClassVar[Allowlist] = Allowlist(())
    webhook_hosts: ClassVar[WebhookHosts] = WebhookHosts(())

    poolq_refused: str | None = None  # why the job was refused (it then gets no callbacks, no webhooks)
    _poolq_webhook_warned = False

    # ------------------------------------------------------------------ admission

    def refuse(self, reason: str) -> FunctionNotAllowed:
        """Mark the job refused and return the error to fail it with."""
        self.poolq_refused = reason
        return FunctionNotAllowed(reason)

    def check_admissible(self) -> None:
        """Refuse, by name alone (nothing is imported), a job the worker must not run: its
        function or a callback outside the allowlist, or a bound-method (``instance``) job."""
        callbacks = [k for k in CALLBACK_KINDS if callback_name(self, k)]
        try:
            self.allowlist.check(self.func_name)
            for kind in callbacks:
                self.allowlist.check(callback_name(self, kind), f"{kind} callback")
        except FunctionNotAllowed as e:
            raise self.refuse(str(e)) from None
        if self.instance is not None:
            raise self.refuse(
                f"job {self.id} is not allowed: it names a method of an instance ({type(self.instance).__name__}); "
                "poolq runs module-level functions and classes only; nothing was run"
            )
        # Callbacks run in this process whatever the strategy, so they are resolved here now:
        # one the allowlist refuses (defined elsewhere) refuses the job before it runs. One that
        # does not exist fails the job when RQ asks for it, after the function ran, as in RQ.
        for kind in callbacks:
            try:
                self._callback(kind)
            except FunctionNotAllowed as e:
                raise self.refuse(str(e)) from None
            except Exception:
                pass

    def _admitted(self) -> bool:
        if self.poolq_refused is not None:
            return False
        try:
            return self.allowlist.admits(self.func_name)
        except Exception:  # data that cannot be read: nothing of this job is called or sent
            return False

    # ------------------------------------------------------------------ the function

    @property
    def func(self) -> Callable[..., Any] | None:
        if self.func_name is None:
            return None
        if self.instance is not None:
            raise self.refuse(f"job {self.id} is not allowed: it names a method of an instance; nothing was run")
        func = self.allowlist.resolve(self.func_name)
        mark_resolved(self)
        return func

    # ------------------------------------------------------------------ callbacks

    def _callback(self, kind: str) -> Callable[..., Any] | None:
        cache: dict[str, Callable[..., Any]] = self.__dict__.setdefault("_poolq_callbacks", {})
        if kind in cache:
            return cache[kind]
        name = callback_name(self, kind)
        if not name or not self._admitted():
            return None
        try:
            func = self.allowlist.resolve(name, f"{kind} callback")
        except FunctionNotAllowed as e:
            self.poolq_refused = str(e)
            raise
        cache[kind] = bounded(func, callback_timeout(self, kind), kind)
        return cache[kind]

    @property
    def success_callback(self) -> Callable[..., Any] | None:
        return self._callback("success")

    @property
    def failure_callback(self) -> Callable[..., Any] | None:
        return self._callback("failure")

    @property
    def stopped_callback(self) -> Callable[..., Any] | None:
        return self._callback("stopped")

    # ------------------------------------------------------------------ webhooks

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        """RQ's ``send_webhooks``, for allowed hosts only, and never for a refused job."""
        if not self.webhooks or not self._admitted():
            return
        refused: list[str] = []
        for webhook in self.webhooks:
            if webhook.job_status != status:
                continue
            if self.webhook_hosts.allows(webhook.url):
                webhook.send(self, exc_string=exc_string)
            else:
                target = self.webhook_hosts.target(webhook.url)
                refused.append("an invalid URL" if target is None else f"{target[0]}:{target[1]}")
        if refused and not self._poolq_webhook_warned:
            self._poolq_webhook_warned = True
            log.warning(
                "job %s: %d webhook(s) not sent, host not in WORKER_WEBHOOK_HOSTS: %s",
                self.id,
                len(refused),
                ", ".join(sorted(set(refused))[:5]),
            )


def guarded_job_class(allowlist: Allowlist, webhook_hosts: WebhookHosts) -> type[GuardedJob]:
    """A :class:`GuardedJob` subclass bound to one worker's allowlist and webhook hosts."""
    return type("PoolqJob", (GuardedJob,), {"allowlist": allowlist, "webhook_hosts": webhook_hosts})
