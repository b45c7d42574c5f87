"""The planner's options: each measured configuration of a workload as a replica to size.

For every configuration (strategy x slots per replica, and a container's CPU limit) of the
workload in an experiment's results: the per-slot service rate ``mu = throughput / slots``,
measured with all slots busy (a burst), the CPUs and memory one replica needs, the measured
service-time variability; then :func:`size` finds the fewest replicas that keep a stable queue
within the utilisation and the SLO (M/M/c, or M/G/c with the measured CV²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from producer.erlang import MMc, mgc_wait_quantile
from producer.errors import BadInput
from producer.results import Results

MAX_REPLICAS = 10_000


@dataclass
class Option:
    strategy: str
    slots: int  # per replica
    mu: float  # per slot, jobs/s
    replica_rate: float  # measured jobs/s of one replica at saturation
    cpu_per_replica: float
    mem_per_replica_mib: float
    cs2: float | None
    run_mean_s: float | None
    measured_cpus: int
    runs: int
    count: int
    problems: list[str]
    cpu_s_per_job: float | None = None  # the worker tree's CPU seconds per finished job, at saturation
    cpu_limit: float | None = None  # --docker: the container's CPU limit it was measured under
    container_mem_peak_mib: float | None = None  # --docker: the container's peak working set under load
    replicas: int = 0
    rho: float = math.nan
    p_wait: float = math.nan
    p95_wait: float = math.nan
    p95_wait_mgc: float = math.nan
    mean_wait: float = math.nan
    feasible: bool = True
    meets_slo: bool = True
    why_not: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.strategy}x{self.slots}" + (f"@{self.cpu_limit:g}cpu" if self.cpu_limit is not None else "")

    @property
    def name(self) -> str:
        """The table's first column: the strategy, and the container's CPU limit when measured in one."""
        return self.strategy + (f"@{self.cpu_limit:g}cpu" if self.cpu_limit is not None else "")

    @property
    def total_cpus(self) -> float:
        return self.replicas * self.cpu_per_replica

    @property
    def total_mem_mib(self) -> float:
        return self.replicas * self.mem_per_replica_mib

    def cost(self, gib_per_cpu: float) -> float:
        return self.total_cpus + self.total_mem_mib / 1024.0 / gib_per_cpu

    def cpu_ceiling(self, node_cpus: float | None) -> float:
        """Jobs/s that replicas sharing ``node_cpus`` CPUs can do at most, whatever their number.

        Replicas add up only while each gets the CPUs it was measured with; once they share a
        fixed set, the CPU seconds each job costs (job plus the worker's own per-job work)
        bound them together. Measured: 4 process replicas on 2 CPUs did 83 jobs/s of 20 ms jobs,
        not the 4 x 43 a linear model predicts (docs/scaling.md).
        """
        if node_cpus is None or not self.cpu_s_per_job:
            return math.inf
        return node_cpus / self.cpu_s_per_job

    def rate_with(self, replicas: int, node_cpus: float | None) -> float:
        """Predicted jobs/s of ``replicas`` replicas at saturation: linear, capped by shared CPUs."""
        return min(replicas * self.replica_rate, self.cpu_ceiling(node_cpus))

    def keda_list_length(self, slo: float | None) -> int | None:
        """KEDA's Redis list scaler ``listLength``: the backlog one replica clears within the SLO.

        KEDA runs ceil(LLEN / listLength) replicas; one replica finishes ``replica_rate`` jobs a
        second, so ``ceil(replica_rate x slo)`` gives a backlog as many replicas as it takes to
        drain it within the SLO (docs/scaling.md).
        """
        if slo is None or not math.isfinite(self.replica_rate) or self.replica_rate <= 0:
            return None
        return max(1, math.ceil(self.replica_rate * slo))

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "slots_per_replica": self.slots,
            "mu_per_slot": self.mu,
            "replica_rate": self.replica_rate,
            "cs2": self.cs2,
            "replicas": self.replicas,
            "servers": self.replicas * self.slots,
            "cpu_per_replica": self.cpu_per_replica,
            "mem_per_replica_mib": self.mem_per_replica_mib,
            "total_cpus": self.total_cpus,
            "total_mem_mib": self.total_mem_mib,
            "rho": self.rho,
            "p_wait": self.p_wait,
            "mean_wait_s": self.mean_wait,
            "p95_wait_s": self.p95_wait,
            "p95_wait_mgc_s": self.p95_wait_mgc,
            "feasible": self.feasible,
            "meets_slo": self.meets_slo,
            "why_not": self.why_not,
            "notes": self.notes,
            "cpu_s_per_job": self.cpu_s_per_job,
            "cpu_limit": self.cpu_limit,
            "container_mem_peak_mib": self.container_mem_peak_mib,
        }


def _round_up_half(x: float) -> float:
    return max(0.5, math.ceil(x * 2 - 1e-9) / 2)


# A container's memory limit: its peak working set under a saturating burst, plus a quarter for
# what the burst did not show (bigger inputs, a slower drain), rounded up to 16 MiB, never below
# the floor --docker refuses to start a worker under (producer/containers.py).
MEMORY_HEADROOM = 1.25
MEMORY_STEP_MIB = 16
MEMORY_FLOOR_MIB = 128


def memory_limit_mib(peak_mib: float) -> float:
    return float(max(MEMORY_FLOOR_MIB, math.ceil(peak_mib * MEMORY_HEADROOM / MEMORY_STEP_MIB) * MEMORY_STEP_MIB))


def options_from(results: Results, workload: str) -> list[Option]:
    """One option per measured configuration of ``workload`` that finished jobs."""
    rows = [r for r in results.summary if r.workload == workload]
    if not rows:
        have = sorted({str(r.workload) for r in results.summary})
        raise BadInput(f"the results have no {workload!r} cells (they have: {', '.join(have) or 'none'})")
    out = []
    meta_cpus = int(results.meta.available_cpus or 1)
    for r in rows:
        m = r.figures
        thr = m.throughput_jobs_s
        if not thr or thr <= 0:
            continue
        slots = int(r.concurrency)
        cpus = int(r.available_cpus or meta_cpus)
        busy = m.cores_busy
        cpu_per = _round_up_half(float(busy)) if busy is not None else float(cpus)
        cpu_per = min(cpu_per, float(cpus))
        mem = m.peak_pss_mib
        cpu_limit = r.cpu_limit
        container_peak = r.container.figures.container_mem_peak_mib if r.container else None
        notes: list[str] = []
        if r.container is not None:
            # Measured in a container: give each replica the CPU limit it ran under and a memory
            # limit from the container's own peak (the cgroup's figure, what the limit enforces).
            cpu_per = float(r.container.cpu_limit)
            if container_peak is not None:
                mem = memory_limit_mib(float(container_peak))
                measured_limit = r.container.figures.container_mem_limit_mib or r.container.memory_limit_mib
                if measured_limit and float(container_peak) > 0.9 * float(measured_limit):
                    notes.append(f"peaked at {float(container_peak):.0f} of its {float(measured_limit):.0f} MiB limit")
        out.append(
            Option(
                strategy=str(r.strategy),
                slots=slots,
                mu=float(thr) / slots,
                replica_rate=float(thr),
                cpu_per_replica=cpu_per,
                mem_per_replica_mib=float(mem) if mem is not None else math.nan,
                cs2=float(m.run_cv2) if m.run_cv2 is not None else None,
                run_mean_s=float(m.run_mean_s) if m.run_mean_s else None,
                measured_cpus=cpus,
                runs=int(r.runs or 1),
                count=int(r.count or 0),
                problems=list(r.problems or []),
                cpu_s_per_job=float(m.cpu_s_per_1k_jobs) / 1000.0 if m.cpu_s_per_1k_jobs else None,
                cpu_limit=float(cpu_limit) if cpu_limit is not None else None,
                container_mem_peak_mib=float(container_peak) if container_peak is not None else None,
                notes=notes,
            )
        )
    return out


def size(opt: Option, lam: float, slo: float | None, max_util: float, model: str = "mmc") -> None:
    """Fills in the replicas and predictions of ``opt`` for arrival rate ``lam``."""
    k = max(1, math.floor(lam / opt.replica_rate) + 1) if opt.replica_rate > 0 else MAX_REPLICAS + 1
    while k <= MAX_REPLICAS:
        m = MMc(lam, opt.mu, k * opt.slots)
        if m.rho <= max_util and m.rho < 1 and (slo is None or _p95(m, opt, model) <= slo):
            break
        k += 1
    if k > MAX_REPLICAS:
        opt.feasible = False
        opt.why_not = f"more than {MAX_REPLICAS} replicas"
        return
    m = MMc(lam, opt.mu, k * opt.slots)
    opt.replicas = k
    opt.rho = m.rho
    opt.p_wait = m.p_wait
    opt.mean_wait = m.mean_wait
    opt.p95_wait = m.wait_quantile(0.95)
    opt.p95_wait_mgc = mgc_wait_quantile(m, 0.95, opt.cs2) if opt.cs2 is not None else math.nan


def _p95(m: MMc, opt: Option, model: str) -> float:
    if model == "mgc" and opt.cs2 is not None:
        return mgc_wait_quantile(m, 0.95, opt.cs2)
    return m.wait_quantile(0.95)
