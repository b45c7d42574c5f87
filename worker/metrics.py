"""Prometheus metrics of a worker: a :class:`~worker.hooks.Hooks` plug-in with its own registry.

What is measured where (see docs/metrics.md for every metric and the PromQL to read them):

- job counters and histograms: in :meth:`Metrics.on_job_end`, on the job's own thread. That
  path runs thousands of times a second, so it takes one lock for a dict look-up and three
  ``bisect`` calls (worker/jobstats.py): no Redis, no psutil, no label formatting;
- jobs in progress, pool size, busy-slot ratio: read from the worker when Prometheus scrapes;
- process-tree memory/CPU and the queue/registry sizes: on a sampler thread every
  ``WORKER_METRICS_SAMPLE_INTERVAL_SECONDS``; a scrape returns the last sample and costs no
  smaps read and no Redis round trip.

Every series carries ``strategy``. The registry is private (not prometheus-client's global
one) and holds no default process/platform collectors, whose series would lack ``strategy``
and would measure the main process only; ``poolq_worker_tree_*`` replaces them.
"""

from __future__ import annotations

import logging
import platform
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker import __version__, defaults, events
from worker.allowlist import was_resolved
from worker.events import END_STATUSES, RECOVERY_OUTCOMES, REPLACE_REASONS, UNTIMED_STATUSES
from worker.hooks import Hooks, WorkerView
from worker.jobstats import JobStats
from worker.proctree import MEMORY_KINDS, ROLES, ProcessTree, TreeSample

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger("worker.metrics")

STATUSES = END_STATUSES
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "finished", "failed")
KNOWN_EVENTS = tuple(e.name for e in events.EVENTS)
OTHER = "other"
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_EVENT_NAMES = 32


class _Live(Collector):
    """Values read when Prometheus scrapes: cheap attribute reads and the sampler's last sample."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def collect(self) -> Iterable[Metric]:
        o = self.owner
        s = o.strategy
        worker = o.worker
        in_flight = worker.in_flight if worker is not None else 0
        capacity = o.capacity

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["strategy"])
            g.add_metric([s], value)
            return g

        yield gauge("poolq_jobs_in_progress", "Jobs running in this worker now.", in_flight)
        yield gauge("poolq_pool_size", "Slots of the pool: jobs this worker runs at once at most.", capacity)
        yield gauge(
            "poolq_available_cpus",
            "CPUs this worker may use (affinity and cgroup quota, rounded up).",
            o.available_cpus,
        )
        yield gauge(
            "poolq_busy_slot_ratio",
            "Busy slots / pool size at scrape time (average it over time: avg_over_time).",
            in_flight / capacity if capacity else 0.0,
        )

        tree = o.last_tree
        if tree is not None:
            procs = GaugeMetricFamily(
                "poolq_worker_tree_processes",
                "Processes in the worker's tree by role (main, pool children, helpers such as the forkserver).",
                labels=["strategy", "role"],
            )
            for role in ROLES:
                procs.add_metric([s, role], tree.processes.get(role, 0))
            yield procs
            mem = GaugeMetricFamily(
                "poolq_worker_tree_memory_bytes",
                "Memory of the worker's process tree by kind (rss, pss, uss) and process role.",
                labels=["strategy", "kind", "role"],
                unit="bytes",
            )
            for kind in MEMORY_KINDS:
                for role in ROLES:
                    mem.add_metric([s, kind, role], tree.memory.get((kind, role), 0))
            yield mem
            cpu = CounterMetricFamily(
                "poolq_worker_tree_cpu_seconds",
                "CPU seconds of the worker's process tree, exited children included.",
                labels=["strategy", "mode"],
                unit="seconds",
            )
            cpu.add_metric([s, "user"], tree.cpu_user_seconds)
            cpu.add_metric([s, "system"], tree.cpu_system_seconds)
            yield cpu
            yield gauge(
                "poolq_metrics_sample_duration_seconds",
                "Time the last process-tree sample took (smaps reads).",
                tree.duration_seconds,
            )

        sizes = o.last_queue_sizes
        if sizes:
            q = GaugeMetricFamily(
                "poolq_queue_jobs",
                "Jobs per queue and state, sampled from Redis; every replica exports it: use max by (queue, state).",
                labels=["strategy", "queue", "state"],
            )
            for (queue, state), n in sorted(sizes.items()):
                q.add_metric([s, queue, state], n)
            yield q


class Metrics(Hooks):
    """The metrics plug-in: a registry, an HTTP endpoint and a background sampler.

    Construct it, append it to the worker's :class:`~worker.hooks.HookChain`, call
    :meth:`serve` (binds the port: a port conflict fails the start); the sampler starts in
    :meth:`on_worker_start` and stops in :meth:`on_worker_stop`.
    """

    def __init__(
        self,
        strategy: str,
        capacity: int,
        available_cpus: int,
        queues: Sequence[str],
        allowed_functions: Sequence[str] = defaults.ALLOWED_FUNCTIONS,
        sample_interval: float = defaults.METRICS_SAMPLE_INTERVAL_SECONDS,
        max_function_labels: int = defaults.MAX_FUNCTION_LABELS,
    ) -> None:
        self.strategy = strategy
        self.capacity = capacity
        self.available_cpus = available_cpus
        self.queue_names = list(queues)
        self.allowed_functions = list(allowed_functions)
        self.max_function_labels = max(1, max_function_labels)
        self.sample_interval = sample_interval
        self.worker: WorkerView | None = None
        self.last_tree: TreeSample | None = None
        self.last_queue_sizes: dict[tuple[str, str], int] = {}
        self._tree: ProcessTree | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: WSGIServer | None = None
        self._redis_warned = False

        r = self.registry = CollectorRegistry()
        s = strategy
        self.jobs = JobStats(s)
        r.register(self.jobs)
        self.runaway_threads = Counter(
            "poolq_runaway_threads",
            "Thread-strategy jobs that overran their timeout: failed, their thread abandoned and replaced.",
            ["strategy"],
            registry=r,
        )
        self.children_replaced = Counter(
            "poolq_pool_children_replaced",
            "Process-pool children replaced, by reason (crashed, timed_out, max_jobs, memory, other).",
            ["strategy", "reason"],
            registry=r,
        )
        self.redis_errors = Counter(
            "poolq_redis_errors", "Redis errors the dequeue loop rode out.", ["strategy"], registry=r
        )
        self.malformed_jobs = Counter(
            "poolq_malformed_jobs",
            "Jobs whose hash could not be loaded; failed with the reason.",
            ["strategy", "queue"],
            registry=r,
        )
        self.jobs_recovered = Counter(
            "poolq_jobs_recovered",
            "Jobs of dead workers this worker recovered: re-queued, or failed as abandoned.",
            ["strategy", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "poolq_worker_events",
            "Every event the worker reports through its hooks, by name.",
            ["strategy", "event"],
            registry=r,
        )
        self.info = Info("poolq_worker", "The worker's configuration; value 1.", ["strategy"], registry=r)
        self.info.labels(s).info(
            {
                "concurrency": str(capacity),
                "available_cpus": str(available_cpus),
                "version": __version__,
                "python": platform.python_version(),
            }
        )
        r.register(_Live(self))

        # Zero-valued series from the start, so rates and dashboards see the counters before the
        # first event (and a restart is seen as a reset, not as a new series).
        self.runaway_threads.labels(s)
        self.redis_errors.labels(s)
        for reason in (*REPLACE_REASONS, OTHER):
            self.children_replaced.labels(s, reason)
        for q in self.queue_names:
            self.malformed_jobs.labels(s, q)
        for outcome in RECOVERY_OUTCOMES:
            self.jobs_recovered.labels(s, outcome)
        self._events: dict[str, Any] = {}
        for event in KNOWN_EVENTS:
            self._event_child(event)

        self._functions: set[str] = set()  # function label values in use (resolved functions)
        self._functions_lock = threading.Lock()
        # Bounded values of the jobs' ``pool`` label: the strategy, or auto's sub-pools.
        self._pools = frozenset({strategy, "thread", "process"})

    # ------------------------------------------------------------------ serving

    def serve(self, address: str, port: int) -> None:
        """Start the /metrics HTTP server (a daemon thread). Raises OSError when the port is taken."""
        import prometheus_client

        # ``*_created`` series double the series count and carry nothing a dashboard uses.
        disable_created: Callable[[], None] = prometheus_client.disable_created_metrics  # untyped
        disable_created()
        self._server, _ = start_http_server(port, address, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", address, self._server.server_port)

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop the sampler and the HTTP server (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ hooks

    def on_worker_start(self, worker: WorkerView) -> None:
        self.worker = worker
        self._tree = ProcessTree(pool_pids=worker.child_pids)
        self._sample()  # values before the first scrape
        self._stop.clear()
        self._thread = threading.Thread(target=self._sampler, name="poolq-metrics-sampler", daemon=True)
        self._thread.start()

    def on_worker_stop(self, worker: WorkerView) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sample(queues=False)  # the last tree figures; no Redis round trip on the way out
        self.close()

    def on_job_end(self, worker: WorkerView | None, event: events.JobEnded) -> None:
        try:
            name: str | None = event.job.func_name
        except Exception:
            name = None
        func = self._function_label(name, was_resolved(event.job))
        status = event.status
        label = status if status in STATUSES else OTHER
        pool_label = event.pool if event.pool in self._pools else OTHER
        if status in UNTIMED_STATUSES:
            self.jobs.record(event.queue, func, label, None, None, None, pool_label)
        else:
            self.jobs.record(
                event.queue, func, label, event.run_seconds, event.wait_seconds, event.total_seconds, pool_label
            )

    # Counted events: each in poolq_worker_events, some in a counter of their own as well.

    def on_runaway_thread(self, worker: WorkerView | None, event: events.RunawayThread) -> None:
        self._event_child(event.name).inc()
        self.runaway_threads.labels(self.strategy).inc()

    def on_child_replaced(self, worker: WorkerView | None, event: events.ChildReplaced) -> None:
        self._event_child(event.name).inc()
        reason = event.reason if event.reason in REPLACE_REASONS else OTHER
        self.children_replaced.labels(self.strategy, reason).inc()

    def on_redis_error(self, worker: WorkerView | None, event: events.RedisError) -> None:
        self._event_child(event.name).inc()
        self.redis_errors.labels(self.strategy).inc()

    def on_malformed_job(self, worker: WorkerView | None, event: events.MalformedJob) -> None:
        self._event_child(event.name).inc()
        queue = event.queue if event.queue in self.queue_names else OTHER
        self.malformed_jobs.labels(self.strategy, queue).inc()

    def on_recovered(self, worker: WorkerView | None, event: events.Recovered) -> None:
        self._event_child(event.name).inc()
        if event.outcome in RECOVERY_OUTCOMES:
            self.jobs_recovered.labels(self.strategy, event.outcome).inc()
        if event.outcome == "abandoned":  # a job that ended for good, though not in this worker
            queue = event.queue if event.queue in self.queue_names else OTHER
            func = self._function_label(event.function, resolved=False)
            self.jobs.record(queue, func, "abandoned", None, None, None)

    def on_route_changed(self, worker: WorkerView | None, event: events.RouteChanged) -> None:
        self._event_child(event.name).inc()

    def on_left_to_recovery(self, worker: WorkerView | None, event: events.LeftToRecovery) -> None:
        self._event_child(event.name).inc()

    # ------------------------------------------------------------------ labels

    def _function_label(self, name: object, resolved: bool) -> str:
        """The function's dotted name, or "other": bounded whatever names producers make up.

        A name becomes a label value only once a job's function actually resolved under the
        allowlist (``resolved``: a name that merely matches a glob may not exist), and only the
        first ``max_function_labels`` of them do; later ones, and every name that never
        resolved here (e.g. an abandoned job of another worker), count as "other".
        """
        if not isinstance(name, str) or not name:
            return OTHER
        if name in self._functions:
            return name
        if not resolved:
            return OTHER
        with self._functions_lock:
            if name not in self._functions and len(self._functions) >= self.max_function_labels:
                return OTHER
            self._functions.add(name)
        return name

    def _event_child(self, event: str) -> Any:
        child = self._events.get(event)
        if child is None:
            ok = _EVENT_NAME.match(event) is not None and len(self._events) < _MAX_EVENT_NAMES
            child = self.events.labels(self.strategy, event if ok else OTHER)
            if ok:
                self._events[event] = child
        return child

    # ------------------------------------------------------------------ sampling

    def _sampler(self) -> None:
        while not self._stop.wait(self.sample_interval):
            self._sample()

    def _sample(self, queues: bool = True) -> None:
        if self._tree is not None:
            try:
                self.last_tree = self._tree.sample()
            except Exception:
                log.exception("metrics: process-tree sample failed (ignored)")
        if not queues:
            return
        try:
            self.last_queue_sizes = self._queue_sizes()
            self._redis_warned = False
        except Exception as e:  # Redis down: keep the last figures, say so once
            if not self._redis_warned:
                log.warning("metrics: could not read queue sizes from Redis (%s); will retry", e)
                self._redis_warned = True

    def _queue_sizes(self) -> dict[tuple[str, str], int]:
        """LLEN and ZCARDs of every queue this worker consumes, in one round trip (no cleanup)."""
        worker = self.worker
        if worker is None:
            return {}
        keys: list[tuple[str, str, str]] = []
        for q in worker.queues:  # QUEUE_STATES: the list, then each registry (a sorted set)
            keys.append((q.name, "queued", q.key))
            for state in QUEUE_STATES[1:]:
                keys.append((q.name, state, getattr(q, f"{state}_job_registry").key))
        with worker.connection.pipeline(transaction=False) as p:
            for _, state, key in keys:
                p.llen(key) if state == "queued" else p.zcard(key)
            values = p.execute(raise_on_error=False)
        # A key of the wrong type (someone SET the queue to a string) loses only its own figure.
        return {
            (name, state): int(v)
            for (name, state, _), v in zip(keys, values, strict=True)
            if not isinstance(v, Exception)
        }
