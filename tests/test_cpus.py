"""CPU detection: fake cgroup v1/v2 trees, real ``taskset``, and ``--concurrency auto`` end to end.

The fake trees are directories laid out like ``/sys/fs/cgroup``; ``detect_cpus`` reads them in
place of the real ones. The real affinity of this test process still applies, so expected
figures are computed from it (``min(affinity, ceil(quota))``) rather than assumed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from redis import Redis
from support.base import PYTHON, REPO_ROOT
from support.rq_jobs import enqueue_many, finished_records, overlap
from support.workers import assert_ok, run_worker, worker_env

from worker import defaults
from worker.cpus import CpuInfo, detect_cpus

AFFINITY = len(os.sched_getaffinity(0))
FIRST_CPU = min(os.sched_getaffinity(0))


def expected(quota: float | None) -> int:
    if quota is None:
        return AFFINITY
    return max(1, min(AFFINITY, math.ceil(quota)))


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(tmp_path: Path, own: str = "/", limits: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A cgroup v2 mount (``cgroup.controllers`` at the root) and a /proc/self/cgroup naming ``own``."""
    root = tmp_path / "cgroup"
    write(root, "cgroup.controllers", "cpuset cpu io memory pids\n")
    for rel, cpu_max in (limits or {}).items():
        write(root, f"{rel.strip('/')}/cpu.max".lstrip("/"), cpu_max + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1_tree(
    tmp_path: Path, own: str = "/", quotas: dict[str, tuple[int, int]] | None = None, controller_dir: str = "cpu"
) -> tuple[Path, Path]:
    """A cgroup v1 hierarchy (no ``cgroup.controllers``) with ``cpu.cfs_quota_us``/``cpu.cfs_period_us``."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True, exist_ok=True)
    for rel, (quota, period) in (quotas or {}).items():
        base = f"{controller_dir}/{rel.strip('/')}".rstrip("/")
        write(root, f"{base}/cpu.cfs_quota_us", f"{quota}\n")
        write(root, f"{base}/cpu.cfs_period_us", f"{period}\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"12:memory:{own}\n4:cpu,cpuacct:{own}\n1:name=systemd:{own}\n")
    return root, proc


# ------------------------------------------------------------------------------ cgroup v2


@pytest.mark.parametrize(
    ("cpu_max", "quota"),
    [
        ("150000 100000", 1.5),
        ("200000 100000", 2.0),
        ("50000 100000", 0.5),
        ("1000 100000", 0.01),
        ("250000 100000", 2.5),
    ],
)
def test_v2_cpu_max_quota(tmp_path: Path, cpu_max: str, quota: float) -> None:
    root, proc = v2_tree(tmp_path, "/", {"/": cpu_max})
    info = detect_cpus(root, proc)
    assert isinstance(info, CpuInfo)
    assert info.quota == pytest.approx(quota)
    assert info.affinity == AFFINITY
    assert info.available == expected(quota)  # rounded up, at least 1, never above affinity
    if math.ceil(quota) < AFFINITY:
        assert "v2" in info.source
    else:
        assert info.source == "affinity"


def test_v2_150000_gives_two_cpus_under_enough_affinity(tmp_path: Path) -> None:
    """The issue's example: ``150000 100000`` is 1.5 CPUs, rounded up to 2 (when affinity allows)."""
    root, proc = v2_tree(tmp_path, "/", {"/": "150000 100000"})
    info = detect_cpus(root, proc)
    assert info.available == min(2, AFFINITY)


def test_v2_quota_below_affinity_wins(tmp_path: Path) -> None:
    if AFFINITY < 2:
        pytest.skip("only one CPU available: a quota below affinity cannot be shown here")
    root, proc = v2_tree(tmp_path, "/", {"/": "50000 100000"})
    info = detect_cpus(root, proc)
    assert info.available == 1
    assert "v2" in info.source


def test_v2_max_means_unlimited(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "/", {"/": "max 100000"})
    info = detect_cpus(root, proc)
    assert info.quota is None
    assert info.available == AFFINITY
    assert info.source == "affinity"


def test_v2_without_cpu_max_is_unlimited(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "/")
    info = detect_cpus(root, proc)
    assert info.quota is None and info.available == AFFINITY


def test_v2_malformed_cpu_max_is_ignored(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "/", {"/": "garbage"})
    info = detect_cpus(root, proc)
    assert info.quota is None and info.available == AFFINITY


def test_v2_nested_parent_tighter_than_child(tmp_path: Path) -> None:
    """/proc/self/cgroup says ``0::/a/b``; ``a`` allows 0.5 CPU, ``a/b`` allows 4: the parent binds."""
    root, proc = v2_tree(tmp_path, "/a/b", {"a": "50000 100000", "a/b": "400000 100000"})
    info = detect_cpus(root, proc)
    assert info.quota == pytest.approx(0.5)
    assert info.available == 1


def test_v2_nested_child_tighter_than_parent(tmp_path: Path) -> None:
    root, proc = v2_tree(tmp_path, "/a/b", {"a": "max 100000", "a/b": "30000 100000"})
    info = detect_cpus(root, proc)
    assert info.quota == pytest.approx(0.3)
    assert info.available == 1


def test_v2_limits_of_other_cgroups_do_not_apply(tmp_path: Path) -> None:
    """A sibling cgroup's limit is not ours."""
    root, proc = v2_tree(tmp_path, "/a/b", {"a/other": "50000 100000"})
    info = detect_cpus(root, proc)
    assert info.quota is None and info.available == AFFINITY


def test_v2_namespaced_path_missing_from_mount_falls_back_to_root(tmp_path: Path) -> None:
    """In a container the mount is the container's own cgroup; /proc may name a host path."""
    root, proc = v2_tree(tmp_path, "/system.slice/docker-abc.scope", {"/": "100000 100000"})
    info = detect_cpus(root, proc)
    assert info.quota == pytest.approx(1.0)
    assert info.available == 1


def test_missing_proc_cgroup_uses_the_root(tmp_path: Path) -> None:
    root, _ = v2_tree(tmp_path, "/", {"/": "100000 100000"})
    info = detect_cpus(root, tmp_path / "does-not-exist")
    assert info.quota == pytest.approx(1.0)
    assert info.available == 1


# ------------------------------------------------------------------------------ cgroup v1


@pytest.mark.parametrize(("quota_us", "period_us"), [(200000, 100000), (50000, 100000), (150000, 100000)])
def test_v1_cfs_quota(tmp_path: Path, quota_us: int, period_us: int) -> None:
    root, proc = v1_tree(tmp_path, "/", {"/": (quota_us, period_us)})
    info = detect_cpus(root, proc)
    quota = quota_us / period_us
    assert info.quota == pytest.approx(quota)
    assert info.available == expected(quota)
    if math.ceil(quota) < AFFINITY:
        assert "v1" in info.source


def test_v1_minus_one_means_unlimited(tmp_path: Path) -> None:
    root, proc = v1_tree(tmp_path, "/", {"/": (-1, 100000)})
    info = detect_cpus(root, proc)
    assert info.quota is None
    assert info.available == AFFINITY
    assert info.source == "affinity"


def test_v1_own_cgroup_path(tmp_path: Path) -> None:
    """/proc/self/cgroup names ``/docker/abc`` for the cpu controller; its quota applies."""
    root, proc = v1_tree(tmp_path, "/docker/abc", {"/": (-1, 100000), "/docker/abc": (50000, 100000)})
    info = detect_cpus(root, proc)
    assert info.quota == pytest.approx(0.5)
    assert info.available == 1


def test_v1_combined_cpu_cpuacct_directory(tmp_path: Path) -> None:
    """Some hosts mount the controller as ``cpu,cpuacct`` only."""
    root, proc = v1_tree(tmp_path, "/", {"/": (100000, 100000)}, controller_dir="cpu,cpuacct")
    info = detect_cpus(root, proc)
    assert info.quota == pytest.approx(1.0)
    assert info.available == 1


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    info = detect_cpus(empty, tmp_path / "nothing")
    assert info.quota is None and info.available == AFFINITY == info.affinity
    assert info.source == "affinity"


# ------------------------------------------------------------------------------ real affinity


DETECT = (
    "import json, dataclasses; from worker.cpus import detect_cpus; "
    "print(json.dumps(dataclasses.asdict(detect_cpus())))"
)


def _detect_in(prefix: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [*prefix, PYTHON, "-c", DETECT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO_ROOT,
        env=worker_env(),
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_taskset_one_cpu_gives_one() -> None:
    info = _detect_in(["taskset", "-c", str(FIRST_CPU)])
    assert info["affinity"] == 1
    assert info["available"] == 1


def test_real_detection_never_exceeds_affinity() -> None:
    info = _detect_in([])
    assert info["affinity"] == AFFINITY
    assert 1 <= int(str(info["available"])) <= AFFINITY


def test_auto_concurrency_follows_affinity_end_to_end(redis: Redis, redis_url: str) -> None:
    """Under ``taskset`` one CPU: the process pool has one child (jobs never overlap), the thread
    pool ``THREADS_PER_CPU`` threads (that many overlap) - proved from the jobs' own records."""
    pin = ["taskset", "-c", str(FIRST_CPU)]

    jobs = enqueue_many(redis, "worker.jobs.io", 4, seconds=0.2)
    run = assert_ok(run_worker(redis_url, "process", "auto", prefix=pin))
    records = finished_records(redis, jobs, run.describe())
    assert overlap(records) == 1
    assert len({r["pid"] for r in records}) == 1

    n = defaults.THREADS_PER_CPU + 2
    jobs = enqueue_many(redis, "worker.jobs.io", n, seconds=0.5)
    run = assert_ok(run_worker(redis_url, "thread", "auto", prefix=pin))
    records = finished_records(redis, jobs, run.describe())
    assert overlap(records) == defaults.THREADS_PER_CPU
