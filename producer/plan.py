"""``python -m producer plan``: replicas, CPUs and memory per strategy for an arrival rate and SLO.

For every measured configuration (strategy x slots per replica) of the workload, from an
experiment's ``results.json``:

- per-slot service rate ``mu = throughput / slots``, measured with all slots busy (a burst):
  it includes the queue's own overhead and whatever the slots contend for (one GIL, the CPUs);
- ``k`` replicas consuming one queue are ``c = k x slots`` servers of one M/M/c queue; ``k`` is
  the smallest number with a stable queue, utilisation <= ``--max-utilization`` and predicted
  p95 queue wait <= ``--slo-p95``;
- CPUs per replica: the cores the worker tree kept busy at saturation, rounded up to 0.5 (never
  more than the CPUs it was measured with); memory per replica: its peak PSS under load;
- the cheapest configuration that meets the SLO, cost = CPUs + GiB / ``--gib-per-cpu``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.erlang import MMc, mgc_wait_quantile
from producer.errors import BadInput

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


def load_results(path: Path) -> dict[str, Any]:
    file = path / "results.json" if path.is_dir() else path
    try:
        data: dict[str, Any] = json.loads(file.read_text())
    except FileNotFoundError:
        raise BadInput(f"--results {path}: no results.json there (run python -m producer experiment first)") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"--results {path}: cannot read {file}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), list):
        raise BadInput(f"--results {path}: {file} is not an experiment's results.json")
    return data


# A container's memory limit: its peak working set under a saturating burst, plus a quarter for
# what the burst did not show (bigger inputs, a slower drain), rounded up to 16 MiB, never below
# the floor --docker refuses to start a worker under (producer/containers.py).
MEMORY_HEADROOM = 1.25
MEMORY_STEP_MIB = 16
MEMORY_FLOOR_MIB = 128


def memory_limit_mib(peak_mib: float) -> float:
    return float(max(MEMORY_FLOOR_MIB, math.ceil(peak_mib * MEMORY_HEADROOM / MEMORY_STEP_MIB) * MEMORY_STEP_MIB))


def options_from(results: dict[str, Any], workload: str) -> list[Option]:
    rows = [r for r in results["summary"] if r.get("workload") == workload]
    if not rows:
        have = sorted({str(r.get("workload")) for r in results["summary"]})
        raise BadInput(f"the results have no {workload!r} cells (they have: {', '.join(have) or 'none'})")
    out = []
    meta_cpus = int(results.get("meta", {}).get("available_cpus") or 1)
    for r in rows:
        thr = r.get("throughput_jobs_s")
        if not thr or thr <= 0:
            continue
        slots = int(r["concurrency"])
        cpus = int(r.get("available_cpus") or meta_cpus)
        busy = r.get("cores_busy")
        cpu_per = _round_up_half(float(busy)) if busy is not None else float(cpus)
        cpu_per = min(cpu_per, float(cpus))
        mem = r.get("peak_pss_mib")
        cpu_limit = r.get("cpu_limit")
        container_peak = r.get("container_mem_peak_mib")
        notes: list[str] = []
        if cpu_limit is not None:
            # Measured in a container: give each replica the CPU limit it ran under and a memory
            # limit from the container's own peak (the cgroup's figure, what the limit enforces).
            cpu_per = float(cpu_limit)
            if container_peak is not None:
                mem = memory_limit_mib(float(container_peak))
                measured_limit = r.get("container_mem_limit_mib") or r.get("memory_limit_mib")
                if measured_limit and float(container_peak) > 0.9 * float(measured_limit):
                    notes.append(f"peaked at {float(container_peak):.0f} of its {float(measured_limit):.0f} MiB limit")
        out.append(
            Option(
                strategy=str(r["strategy"]),
                slots=slots,
                mu=float(thr) / slots,
                replica_rate=float(thr),
                cpu_per_replica=cpu_per,
                mem_per_replica_mib=float(mem) if mem is not None else math.nan,
                cs2=float(r["run_cv2"]) if r.get("run_cv2") is not None else None,
                run_mean_s=float(r["run_mean_s"]) if r.get("run_mean_s") else None,
                measured_cpus=cpus,
                runs=int(r.get("runs") or 1),
                count=int(r.get("count") or 0),
                problems=list(r.get("problems") or []),
                cpu_s_per_job=float(r["cpu_s_per_1k_jobs"]) / 1000.0 if r.get("cpu_s_per_1k_jobs") else None,
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


@dataclass
class Plan:
    workload: str
    arrival_rate: float
    slo_p95: float | None
    max_cpus: float | None
    max_util: float
    gib_per_cpu: float
    model: str
    options: list[Option]
    recommended: Option | None
    warnings: list[str]
    assumptions: list[str]
    shared_cpus: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "arrival_rate": self.arrival_rate,
            "slo_p95_s": self.slo_p95,
            "max_cpus": self.max_cpus,
            "max_utilization": self.max_util,
            "gib_per_cpu": self.gib_per_cpu,
            "model": self.model,
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended.to_json() if self.recommended else None,
            "warnings": self.warnings,
            "assumptions": self.assumptions,
            "shared_cpus": self.shared_cpus,
            "keda": self.keda(),
            "scaling": self.scaling(),
        }

    def keda(self) -> dict[str, Any] | None:
        """The recommended line as a KEDA ScaledObject's Redis list trigger and replica bounds."""
        r = self.recommended
        if r is None:
            return None
        out: dict[str, Any] = {
            "minReplicaCount": r.replicas,
            "listLength": r.keda_list_length(self.slo_p95),
            "queue_key": "rq:queue:<queue>",
        }
        if self.shared_cpus is not None and r.cpu_per_replica > 0:
            out["maxReplicaCount"] = max(r.replicas, math.floor(self.shared_cpus / r.cpu_per_replica))
        return out

    def scaling(self) -> list[dict[str, float]]:
        """Predicted saturated jobs/s of the recommended configuration for 1, 2, 4, ... replicas."""
        r = self.recommended
        if r is None:
            return []
        ks = sorted({1, 2, 4, 8, r.replicas})
        return [{"replicas": k, "jobs_s": r.rate_with(k, self.shared_cpus)} for k in ks]


def make_plan(
    results: dict[str, Any],
    workload: str,
    arrival_rate: float,
    slo_p95: float | None = None,
    max_cpus: float | None = None,
    max_util: float | None = None,
    gib_per_cpu: float = 4.0,
    model: str = "mmc",
    shared_cpus: float | None = None,
) -> Plan:
    if not math.isfinite(arrival_rate) or arrival_rate <= 0:
        raise BadInput(f"--arrival-rate must be a positive number of jobs per second, got {arrival_rate:g}")
    if slo_p95 is not None and (not math.isfinite(slo_p95) or slo_p95 <= 0):
        raise BadInput(f"--slo-p95 must be a positive number of seconds, got {slo_p95:g}")
    if max_cpus is not None and (not math.isfinite(max_cpus) or max_cpus <= 0):
        raise BadInput(f"--max-cpus must be a positive number, got {max_cpus:g}")
    if max_util is None:
        max_util = 0.95 if slo_p95 is not None else 0.8
    if not 0 < max_util < 1:
        raise BadInput(f"--max-utilization must be between 0 and 1 (exclusive), got {max_util:g}")
    if gib_per_cpu <= 0:
        raise BadInput("--gib-per-cpu must be positive")
    if model not in ("mmc", "mgc"):
        raise BadInput(f"--model must be mmc or mgc, got {model!r}")
    if shared_cpus is not None and (not math.isfinite(shared_cpus) or shared_cpus <= 0):
        raise BadInput(f"--shared-cpus must be a positive number, got {shared_cpus:g}")
    opts = options_from(results, workload)
    if not opts:
        raise BadInput(f"no {workload!r} cell finished any job: nothing to plan from")
    warnings: list[str] = []
    for o in opts:
        size(o, arrival_rate, slo_p95, max_util, model)
        if max_cpus is not None and o.feasible and o.total_cpus > max_cpus:
            o.feasible = False
            o.why_not = f"needs {o.total_cpus:g} CPUs > --max-cpus {max_cpus:g}"
        ceiling = o.cpu_ceiling(shared_cpus)
        if o.feasible and arrival_rate > ceiling * max_util:
            o.feasible = False
            o.why_not = (
                f"{shared_cpus:g} shared CPUs carry at most {ceiling:,.1f} jobs/s "
                f"({(o.cpu_s_per_job or 0) * 1000:.1f} ms CPU per job), whatever the replicas"
            )
        if o.problems:
            o.notes.append("measured with problems: " + "; ".join(o.problems)[:200])
        if o.replicas > 1:
            o.notes.append(f"{o.replicas} replicas: extrapolated from one measured replica")
    meeting = [o for o in opts if o.feasible]
    recommended = min(meeting, key=lambda o: (o.cost(gib_per_cpu), o.p95_wait)) if meeting else None

    best_measured = max(o.replica_rate for o in opts)
    all_rates = [float(r["throughput_jobs_s"]) for r in results["summary"] if r.get("throughput_jobs_s")]
    if arrival_rate > best_measured:
        warnings.append(
            f"{arrival_rate:g} jobs/s is more than any one {workload} worker was measured to do "
            f"({best_measured:,.1f} jobs/s): the plan assumes replicas add up linearly, which the data does not show"
        )
    if all_rates and arrival_rate > max(all_rates):
        warnings.append(
            f"no cell of these results pushed Redis beyond {max(all_rates):,.0f} jobs/s: at {arrival_rate:g} jobs/s "
            "Redis (and the producers) may become the bottleneck, which this model ignores"
        )
    small = [o.label for o in opts if o.count * o.runs < 100]
    if small:
        warnings.append(f"few jobs measured for {', '.join(small)} (< 100): the service rates are rough")
    shaky = [o.label for o in opts if o.problems]
    if shaky:
        warnings.append(f"cells with problems (failed jobs, timeouts) for {', '.join(shaky)}")
    cs2s = [o.cs2 for o in opts if o.cs2 is not None]
    if cs2s and max(abs(c - 1.0) for c in cs2s) > 0.5:
        lo, hi = min(cs2s), max(cs2s)
        warnings.append(
            f"measured service times are not exponential (CV² {lo:.2f}..{hi:.2f}, exponential = 1): M/M/c "
            "over-estimates waits of regular jobs (CV² < 1) and under-estimates heavy tails; see the M/G/c column"
        )
    machine = results.get("meta", {}).get("available_cpus")
    if slo_p95 is not None and recommended is None:
        warnings.append("no strategy meets the SLO within the limits given")
    assumptions = [
        "Arrivals are Poisson at the given rate; one FIFO queue is shared by all replicas (RQ's list); "
        "every slot of every replica takes the next job as soon as it is free.",
        "Service times are exponential (M/M/c) with the per-slot rate measured at saturation: throughput of one "
        "replica / its slots. That rate includes the queue's overhead and the slots' contention (threads share "
        "one GIL, processes the CPUs): for contended slots the model is pessimistic at low load.",
        f"A replica gets the CPUs it kept busy when saturated (rounded up to 0.5, at most the {machine} it was "
        "measured with) and needs its peak PSS under load; replicas scale linearly (no shared bottleneck but Redis, "
        "which is not modelled).",
        f"Replicas are added until utilisation <= {max_util:g}"
        + (
            f" and the predicted p95 queue wait <= {slo_p95:g} s "
            + ("(M/M/c)" if model == "mmc" else "(M/G/c: Erlang C's P(wait), the wait scaled by (1 + CV²) / 2)")
            if slo_p95 is not None
            else ""
        )
        + f"; cost = CPUs + GiB / {gib_per_cpu:g} (a typical cloud price ratio).",
        "Queue wait is started_at - enqueued_at; end-to-end adds the run time.",
    ]
    if any(o.cpu_limit is not None for o in opts):
        assumptions[2] = (  # instead of "the CPUs it kept busy ... its peak PSS"
            "Measured in containers (--docker): a replica gets the CPU limit it was measured under and a memory "
            f"limit of its container's peak working set under load x {MEMORY_HEADROOM:g}, rounded up to "
            f"{MEMORY_STEP_MIB} MiB, at least {MEMORY_FLOOR_MIB} MiB; the same strategy under different limits is "
            "a different option (more small containers or fewer big ones); replicas scale linearly (no shared "
            "bottleneck but Redis, which is not modelled)."
        )
    if shared_cpus is not None:
        assumptions.append(
            f"The replicas share {shared_cpus:g} CPUs: together they do at most {shared_cpus:g} / "
            "(CPU seconds per job) jobs/s, the ceiling measured when replicas outnumber the CPUs (docs/scaling.md)."
        )
    return Plan(workload, arrival_rate, slo_p95, max_cpus, max_util, gib_per_cpu, model, opts, recommended, warnings,
                assumptions, shared_cpus)  # fmt: skip


def render(plan: Plan) -> str:
    def num(x: float, fmt: str) -> str:
        return "—" if x is None or not math.isfinite(x) else format(x, fmt)

    slo = f", SLO p95 queue wait <= {plan.slo_p95:g} s" if plan.slo_p95 is not None else ""
    cap = f", at most {plan.max_cpus:g} CPUs" if plan.max_cpus is not None else ""
    lines = [f"Plan for {plan.arrival_rate:g} {plan.workload} jobs/s{slo}{cap}:", ""]
    head = (
        f"{'strategy':<14} {'slots':>5} {'mu/slot':>8} {'replicas':>8} {'CPUs':>6} {'memory':>10} "
        f"{'util':>5} {'P(wait)':>7} {'p95 wait':>9} {'M/G/c p95':>9}  note"
    )
    lines += [head, "-" * len(head)]
    for o in sorted(plan.options, key=lambda o: (not o.feasible, o.cost(plan.gib_per_cpu))):
        mark = "  <- recommended" if o is plan.recommended else ""
        note = o.why_not if not o.feasible else ("; ".join(o.notes) if o.notes else "")
        if not o.replicas:
            lines.append(f"{o.name:<14} {o.slots:>5} {o.mu:>8.2f} {'—':>8}  {note}")
            continue
        lines.append(
            f"{o.name:<14} {o.slots:>5} {o.mu:>8.2f} {o.replicas:>8} {o.total_cpus:>6.1f} "
            f"{num(o.total_mem_mib, ',.0f') + ' MiB':>10} {o.rho:>5.2f} {o.p_wait:>7.3f} "
            f"{num(o.p95_wait, '.3f') + ' s':>9} {num(o.p95_wait_mgc, '.3f') + ' s':>9}  {note}{mark}"
        )
    lines.append("")
    if plan.recommended:
        r = plan.recommended
        lines.append(
            f"Recommendation: {r.replicas} x {r.strategy} worker(s) with {r.slots} slot(s) each "
            f"(--strategy {r.strategy} --concurrency {r.slots}): {r.total_cpus:g} CPUs, "
            f"{num(r.total_mem_mib, ',.0f')} MiB, utilisation {r.rho:.2f}, predicted p95 queue wait "
            f"{num(r.p95_wait, '.3f')} s (M/M/c; {num(r.p95_wait_mgc, '.3f')} s with the measured service-time "
            f"variability, M/G/c)."
        )
        if r.cpu_limit is not None:
            m = f"{r.mem_per_replica_mib:.0f}m" if math.isfinite(r.mem_per_replica_mib) else "(not measured)"
            lines.append(
                f"Per container: {r.cpu_limit:g} CPU(s), memory limit {m} (docker run --cpus {r.cpu_limit:g} "
                f"--memory {m}; compose cpus: {r.cpu_limit:g}, mem_limit: {m}; Kubernetes cpu: {r.cpu_limit:g}, "
                f"memory: {m.removesuffix('m')}Mi); measured peak {num(r.container_mem_peak_mib or math.nan, '.0f')} "
                f"MiB, the worker detecting {math.ceil(r.cpu_limit)} CPU(s) and sizing its pool from them."
            )
        k = plan.keda()
        if k is not None:
            length = k["listLength"]
            lines.append(
                f"KEDA (deploy/kubernetes/optional/keda.yaml): minReplicaCount {k['minReplicaCount']}"
                + (f", maxReplicaCount {k['maxReplicaCount']}" if "maxReplicaCount" in k else "")
                + (
                    f", Redis list trigger listLength {length} (= ceil({r.replica_rate:,.1f} jobs/s per replica x "
                    f"{plan.slo_p95:g} s SLO): a backlog of that many jobs per replica drains within the SLO)."
                    if length is not None
                    else "; give --slo-p95 for the list trigger's listLength."
                )
            )
        shared = f" on {plan.shared_cpus:g} shared CPUs" if plan.shared_cpus is not None else ""
        lines.append(
            f"Saturated throughput by replicas{shared}: "
            + ", ".join(f"{int(p['replicas'])}: {p['jobs_s']:,.1f} jobs/s" for p in plan.scaling())
            + ("" if shared else " (linear: each replica with its own CPUs; --shared-cpus N caps it)")
            + "."
        )
    else:
        lines.append("Recommendation: none — no configuration meets the request (see the notes).")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in plan.assumptions]
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in plan.warnings]
    return "\n".join(lines) + "\n"
