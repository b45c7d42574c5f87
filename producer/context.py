"""What every cell of one experiment shares: the options, Redis, the CPUs, the calibrated specs.

Built once by the runner (:mod:`producer.experiment`) after the backend has started; handed
to the backend and to the cell procedure (:mod:`producer.cell`), which add every job's
timestamps to :attr:`Context.jobs_rows` (``jobs.csv``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from producer.files import JobRow
from producer.options import Options
from producer.results import Calibration
from producer.sampling import HostCpu, other_load
from producer.workloads import JobSpec


def log(msg: str) -> None:
    """Progress goes to stderr."""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Context:
    opts: Options
    conn: redis.Redis[bytes]
    url: str  # Redis as the producer reaches it
    run_id: str
    cpus: int  # what this machine's worker would detect
    specs: dict[str, JobSpec]  # workload -> the jobs every cell of it sends
    calibration: dict[str, Calibration]
    log_dir: Path
    redis_proc: psutil.Process | None = None  # a local redis-server, for its CPU seconds
    jobs_rows: list[JobRow] = field(default_factory=list)

    def queue_name(self, *parts: str) -> str:
        return "-".join(("poolq-exp", self.run_id, *parts))

    def wait_quiet(self) -> float | None:
        """With ``--quiet-below C``: wait (at most ``--quiet-wait`` s) until other programs use < C cores.

        Returns the other load seen last (cores), None when not asked to wait.
        """
        opts = self.opts
        if opts.quiet_below is None:
            return None
        deadline = time.monotonic() + opts.quiet_wait
        warned = False
        while True:
            a = HostCpu.read(self.redis_proc)
            time.sleep(1.0)
            b = HostCpu.read(self.redis_proc)
            load = other_load(a, b, 0.0)
            other = load.other_cores if load else 0.0
            if other < opts.quiet_below:
                return other
            if time.monotonic() > deadline:
                log(f"warning: other programs still use {other:.2f} cores after {opts.quiet_wait:g} s; going on")
                return other
            if not warned:
                log(f"waiting for other programs to use < {opts.quiet_below:g} cores (now {other:.2f})")
                warned = True
