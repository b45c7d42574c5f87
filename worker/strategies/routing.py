"""auto's router: what it learns about each function, and where each job goes.

Each job of the ``auto`` strategy is routed by :class:`Router` (``worker/strategies/auto.py``
places it):

1. an explicit hint wins: ``job.meta["poolq_hint"]`` (``"cpu"``/``"io"``), then a hint on the
   function (``@worker.composite.cpu_bound`` / ``@io_bound``);
2. otherwise the function's learned class: ``cpu`` -> process, ``io`` -> thread. A function
   becomes ``cpu`` when its CPU time / wall time is >= :data:`CPU_RATIO` (and it uses at
   least :data:`MIN_CPU_SECONDS` of CPU per job: below that a process hop costs more than the
   GIL time it saves), and ``io`` again when the ratio drops below :data:`IO_RATIO`
   (hysteresis). The figures are measured on every job: ``time.thread_time`` around the call
   in a thread; the child's ``process_time`` in a process child (one job at a time, so it is
   the job's own CPU). Wall time excludes the time the thread waited for a free core
   (``/proc/thread-self/schedstat``), so an oversubscribed machine does not make CPU-bound
   code look I/O-bound. A function's first run in each process is not counted: it pays for
   imports and warm-up (``worker.jobs.cpu`` calibrates its loop then);
3. a new function is measured in a process first (:data:`PROBE_RUNS` runs): there its ratio
   is clean. In a thread the ratio of CPU-bound code is understated (it also waits for the
   GIL), so thread measurements can only *raise* a function to ``cpu``, and only when no
   process measurement is recent (within the last ``REPROBE_EVERY / 4`` runs); an ``io``
   function is re-measured in a free process child every :data:`REPROBE_EVERY` runs. When no
   child frees up within :data:`EARLY_SECONDS`, one job of a new function at a time is
   measured in a free thread instead (its other jobs wait), so new work never stalls behind
   long CPU jobs: alone in a thread a CPU-bound function still shows a high ratio, and a low
   one is only provisional (and that job is not crash-isolated, as any thread job). Jobs of a
   new function that wait do not wait for a long first run to end: once one has run
   :data:`EARLY_SECONDS`, its CPU so far / time so far classes the function;
4. an ``io`` function that still uses CPU (>= :data:`MIN_CPU_SECONDS` per job, e.g. parse
   then wait) runs in an *idle* process child when there is one and no ``cpu`` job waits for
   it: its CPU then leaves the worker's GIL, which the worker's own per-job work needs too.
   Any ``io`` function overflows into a free child when the thread pool is full. Never the
   reverse: CPU-bound code in the worker's threads would stall every thread on the GIL.

"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.allowlist import Allowlist, allowlist_for
from worker.hints import CPU, HINT_ATTRIBUTE, HINT_META_KEY, IO, POOL_OF_CLASS, parse_hint
from worker.strategies.base import StrategyConfig

if TYPE_CHECKING:
    from rq.job import Job

log = logging.getLogger("worker.strategies")

# Router._declared_hint of a name that does not resolve under the allowlist.
UNRESOLVED = "unresolved"

# A function goes to the process pool when its CPU time / wall time reaches CPU_RATIO and back to
# the thread pool when it falls below IO_RATIO (hysteresis: a function near the line does not
# flap). With P single-job children and one GIL, a job of CPU c and wait w is served faster in the
# threads (up to 1/c a second, bounded by the GIL) than in the children (P/(c+w)) when
# c/(c+w) < 1/P: 0.5 on a 2-CPU machine. The threshold is that figure, not a tuned constant.
CPU_RATIO = 0.5
IO_RATIO = 0.4
# Below this much CPU per job, a process hop (pickling, a pipe round trip, the parent's own
# lifecycle work of ~2 ms per job) costs more than the GIL time it would save.
MIN_CPU_SECONDS = 0.002
PROBE_RUNS = 2  # runs of a new function measured in a process child before it is classed
EARLY_SECONDS = 1.0  # a first run this long in progress classes its function (from its CPU so far)
REPROBE_EVERY = 200  # an io function is re-measured in a free process child every this many runs
EWMA_ALPHA = 0.3


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


@dataclass
class Profile:
    """What auto learned about one function."""

    klass: str | None = None  # cpu, io, or None while it is measured
    process_ratio: float | None = None  # EWMA of CPU/wall measured in a process child (clean)
    process_cpu: float | None = None  # EWMA of CPU seconds per run, in a process child
    thread_ratio: float | None = None  # EWMA of CPU/wall in a thread (understated under GIL contention)
    thread_cpu: float | None = None
    process_runs: int = 0
    thread_runs: int = 0
    since_probe: int = 0
    thread_runs_since_process: int = 0  # thread runs since the last process measurement
    thread_probe: bool = False  # a job of this new function is being measured in a thread
    basis: str = ""  # how the class was decided when it was not from finished runs


@dataclass(frozen=True)
class RunInProgress:
    """A run of a new function, watched so that its class can be decided before it ends."""

    started: float  # perf_counter
    cpu: Callable[[], float | None]  # CPU seconds of the run so far (None: cannot tell)


@dataclass(frozen=True)
class Route:
    pool: str  # "process" or "thread": where the job should run
    overflow: bool  # may run in the other pool when its own is full (learned io functions only)
    reason: str
    probe: bool = False  # an io function re-measured in a process: only if one is free now
    idle_child: bool = False  # an io function that uses CPU: an idle child first, if no cpu job waits
    new: bool = False  # not classed yet: a process, or one job at a time in a thread


class Router:
    """Per-function CPU/wall profiles and the routing rule (thread-safe)."""

    def __init__(
        self,
        on_change: Callable[[str, str | None, str, Profile], None] | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.allowlist = allowlist if allowlist is not None else allowlist_for(StrategyConfig.allowed_functions)
        self.profiles: dict[str, Profile] = {}
        self.declared: dict[str, str | None] = {}
        self.on_change = on_change
        self._bad_hints: set[str] = set()
        self.running: dict[str, dict[int, RunInProgress]] = {}
        self._run_ids = itertools.count(1)

    @staticmethod
    def describe_rule() -> str:
        return (
            f"a function runs in a process when its CPU time / wall time >= {CPU_RATIO:g} and it uses >= "
            f"{MIN_CPU_SECONDS * 1000:g} ms CPU per job, in a thread otherwise (back to threads below "
            f"{IO_RATIO:g}); a new function is measured in a process first ({PROBE_RUNS} runs; one job at a time "
            f"in a thread when no process frees up within {EARLY_SECONDS:g} s); an I/O-bound "
            f"function overflows into a free process when the threads are full, and takes an idle one first if it "
            f"uses >= {MIN_CPU_SECONDS * 1000:g} ms CPU per job; hints win: "
            f"job.meta['{HINT_META_KEY}'] = 'cpu'|'io', or @worker.composite.cpu_bound / @io_bound"
        )

    def _declared_hint(self, func_name: str) -> str | None:
        """The hint on the function itself (decorator), resolved once per name in this process
        under the allowlist; :data:`UNRESOLVED` when the name does not resolve (refused, or no
        such function). Only names that resolved are remembered: the table stays as small as
        the code, whatever names producers make up."""
        with self.lock:
            if func_name in self.declared:
                return self.declared[func_name]
        try:
            hint = parse_hint(getattr(self.allowlist.resolve(func_name), HINT_ATTRIBUTE, None))
        except Exception:  # the job itself reports why where it runs
            return UNRESOLVED
        with self.lock:
            self.declared[func_name] = hint
        return hint

    def route(self, job: Job) -> Route:
        meta = job.meta.get(HINT_META_KEY) if isinstance(job.meta, dict) else None
        if meta is not None:
            hint = parse_hint(meta)
            if hint is not None:
                return Route(POOL_OF_CLASS[hint], False, f"hint job.meta[{HINT_META_KEY!r}]={meta!r}")
            if str(meta) not in self._bad_hints and len(self._bad_hints) < 100:
                self._bad_hints.add(str(meta))
                log.warning("auto: ignoring job.meta[%r]=%r (expected 'cpu' or 'io')", HINT_META_KEY, meta)
        func_name = str(job.func_name)
        hint = self._declared_hint(func_name)
        if hint == UNRESOLVED:  # it fails to resolve in the thread as it did here: no child, no profile
            return Route("thread", False, "does not resolve")
        if hint is not None:
            return Route(POOL_OF_CLASS[hint], False, f"declared {hint}-bound")
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if p.klass is None:
                return Route("process", False, "new function: measured", new=True)
            if p.klass == CPU:
                return Route("process", False, "learned cpu")
            p.since_probe += 1
            if p.since_probe >= REPROBE_EVERY:
                p.since_probe = 0
                return Route("thread", True, "learned io (re-measured in a process)", probe=True)
            cpu = p.process_cpu if p.process_cpu is not None else p.thread_cpu
            if cpu is not None and cpu >= MIN_CPU_SECONDS:
                return Route("thread", True, "learned io, uses CPU: an idle child first", idle_child=True)
            return Route("thread", True, "learned io")

    def start_thread_probe(self, func_name: str) -> bool:
        """Claim the one thread measurement of a new function (False if one runs already)."""
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if p.thread_probe or p.klass is not None:
                return False
            p.thread_probe = True
            return True

    def is_new(self, func_name: str) -> bool:
        with self.lock:
            p = self.profiles.get(func_name)
            return p is None or p.klass is None

    def run_started(self, func_name: str, cpu: Callable[[], float | None]) -> int | None:
        """Watch a run of a new function (returns a handle for :meth:`run_ended`, None if not new)."""
        with self.lock:
            p = self.profiles.get(func_name)
            if p is not None and p.klass is not None:
                return None
            rid = next(self._run_ids)
            self.running.setdefault(func_name, {})[rid] = RunInProgress(time.perf_counter(), cpu)
            return rid

    def run_ended(self, func_name: str, rid: int | None) -> None:
        if rid is None:
            return
        with self.lock:
            runs = self.running.get(func_name)
            if runs is not None:
                runs.pop(rid, None)
                if not runs:
                    del self.running[func_name]

    def early(self, func_name: str) -> bool:
        """Class a new function from a run in progress for EARLY_SECONDS or more; True if classed now."""
        with self.lock:
            p = self.profiles.get(func_name)
            if p is None or p.klass is not None:
                return False
            runs = list(self.running.get(func_name, {}).values())
        for r in runs:
            elapsed = time.perf_counter() - r.started
            cpu = r.cpu() if elapsed >= EARLY_SECONDS else None
            if cpu is None:
                continue
            ratio = min(1.0, max(0.0, cpu / elapsed))
            if IO_RATIO <= ratio < CPU_RATIO:
                continue
            new = IO if ratio < IO_RATIO else CPU
            with self.lock:
                if p.klass is not None:
                    return False
                p.klass = new
                p.since_probe = 0
                p.basis = f"{elapsed:.1f} s into a first run still in progress, CPU/wall so far {ratio:.2f}"
                snapshot = Profile(**vars(p))
            if self.on_change is not None:
                self.on_change(func_name, None, new, snapshot)
            return True
        return False

    def end_thread_probe(self, func_name: str) -> None:
        with self.lock:
            p = self.profiles.get(func_name)
            if p is not None:
                p.thread_probe = False

    def observe(self, func_name: str, pool: str, cpu: float, wall: float) -> None:
        """One finished run: ``cpu`` and ``wall`` seconds where it ran (a thread or a process child)."""
        if wall <= 0:
            return
        ratio = min(1.0, max(0.0, cpu / wall))
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if pool == "process":
                p.process_runs += 1
                p.process_ratio = _ewma(p.process_ratio, ratio)
                p.process_cpu = _ewma(p.process_cpu, cpu)
                p.thread_runs_since_process = 0
            else:
                p.thread_runs += 1
                p.thread_runs_since_process += 1
                p.thread_ratio = _ewma(p.thread_ratio, ratio)
                p.thread_cpu = _ewma(p.thread_cpu, cpu)
            old = p.klass
            new = self._classify(p)
            if new == old:
                return
            p.klass = new
            p.since_probe = 0
            p.basis = ""
            snapshot = Profile(**vars(p))
        if self.on_change is not None and new is not None:
            self.on_change(func_name, old, new, snapshot)

    @staticmethod
    def _classify(p: Profile) -> str | None:
        old = p.klass
        measured = old is not None or p.process_runs >= PROBE_RUNS
        fresh = p.thread_runs_since_process < REPROBE_EVERY // 4
        if p.process_ratio is not None and p.process_cpu is not None and measured and fresh:
            # Measured in a process, recently: the clean figure decides, alone.
            heavy = p.process_ratio >= CPU_RATIO and p.process_cpu >= MIN_CPU_SECONDS
            light = p.process_ratio < IO_RATIO or p.process_cpu < MIN_CPU_SECONDS / 2
            if old is None:
                return CPU if heavy else IO
            if old == CPU and light:
                return IO
            if old == IO and heavy:
                return CPU
            return old
        if p.thread_ratio is not None and p.thread_cpu is not None and old != CPU:
            if p.thread_ratio >= CPU_RATIO and p.thread_cpu >= MIN_CPU_SECONDS:
                return CPU  # CPU-heavy even though a thread understates it
            if old is None and p.thread_runs >= PROBE_RUNS and p.process_runs == 0:
                return IO  # provisional: measured alone in a thread; a process re-probe checks it
        return old


def thread_cpu_reader() -> Callable[[], float | None]:
    """CPU seconds the calling thread uses from now on, readable from any thread of the process."""
    try:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        start = time.clock_gettime(clock)
    except (AttributeError, OSError):
        return lambda: None

    def read() -> float | None:
        try:
            return time.clock_gettime(clock) - start
        except OSError:  # the thread is gone
            return None

    return read


def process_cpu_reader(pid: int) -> Callable[[], float | None]:
    """CPU seconds process ``pid`` uses from now on."""
    import psutil

    def total() -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return None

    start = total()

    def read() -> float | None:
        now = total()
        return None if now is None or start is None else now - start

    return read
