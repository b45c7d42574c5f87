"""How many CPUs this process may really use.

``os.cpu_count()`` reports the host's cores; a container limited to 2 CPUs on a 64-core host
would then start 64 processes that fight over 2 CPUs of quota. The figure that matters is the
smallest of the CPU affinity mask and the cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us / cpu.cfs_period_us``), rounded up, at least 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuInfo:
    available: int
    affinity: int
    quota: float | None  # CPUs granted by the cgroup quota, None when unlimited
    source: str  # what bounded the figure: "affinity" or "cgroup v2 cpu.max" / "cgroup v1 cfs quota"


def _own_cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The v2 path and the v1 ``cpu`` controller path of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _v2_quota(root: Path, rel: str | None) -> float | None:
    """The tightest ``cpu.max`` from this cgroup up to the root (a parent's limit applies too)."""
    best: float | None = None
    candidates = []
    if rel is not None:
        p = root / rel.lstrip("/")
        while True:
            candidates.append(p)
            if p == root or root not in p.parents:
                break
            p = p.parent
    candidates.append(root)
    for d in candidates:
        try:
            quota_s, period_s = (d / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota_s == "max":
            continue
        quota = int(quota_s) / int(period_s)
        best = quota if best is None else min(best, quota)
    return best


def _v1_quota(root: Path, rel: str | None) -> float | None:
    for d in ([root / "cpu" / rel.lstrip("/")] if rel else []) + [root / "cpu", root / "cpu,cpuacct"]:
        try:
            quota = int((d / "cpu.cfs_quota_us").read_text())
            period = int((d / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
        return None
    return None


def detect_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> CpuInfo:
    """The CPUs this process may use; ``cgroup_root`` and ``proc_cgroup`` are overridable for tests."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    v2_rel, v1_rel = _own_cgroup_paths(proc_cgroup)
    quota, source = None, "affinity"
    if (cgroup_root / "cgroup.controllers").exists():
        quota = _v2_quota(cgroup_root, v2_rel)
        if quota is not None:
            source = "cgroup v2 cpu.max"
    else:
        quota = _v1_quota(cgroup_root, v1_rel)
        if quota is not None:
            source = "cgroup v1 cfs quota"
    available = affinity
    if quota is not None and math.ceil(quota) < affinity:
        available = math.ceil(quota)
    else:
        source = "affinity"
    return CpuInfo(available=max(1, available), affinity=affinity, quota=quota, source=source)
