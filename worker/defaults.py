"""Every default of the worker in one place, units in the names.

The CLI's ``--help`` and the README's configuration table are generated from / checked
against these values, so changing one here changes it everywhere.
"""

from __future__ import annotations

REDIS_URL = "redis://127.0.0.1:6379/0"
STRATEGY = "thread"
STRATEGIES = ("thread", "process", "inline", "hybrid", "auto")
CONCURRENCY = "auto"
QUEUES = ("default",)

# Threads per available CPU for the thread strategy. I/O-bound jobs spend most of their wall
# time waiting, so one thread per core leaves the cores idle; see docs/sizing.md for the
# measurement that picked this figure.
THREADS_PER_CPU = 8

# hybrid and auto: child processes (0: one per available CPU); hybrid: threads in each child
# (0: THREADS_PER_CPU, so hybrid has as many slots as the thread strategy, spread over P processes).
PROCESSES = 0
THREADS_PER_PROCESS = 0

SERIALIZER = "json"
# Functions (and callbacks) jobs may name: globs whose '*' matches within one dotted segment,
# judged on the resolved object (worker/allowlist.py).
ALLOWED_FUNCTIONS = ("worker.jobs.*",)
# Hosts (or host:port) a job's RQ webhooks may be sent to; empty: no webhooks at all.
WEBHOOK_HOSTS: tuple[str, ...] = ()

# RQ's default job timeout (seconds) when a job does not carry one.
JOB_TIMEOUT_SECONDS = 180
RESULT_TTL_SECONDS = 500

# How often the worker refreshes its own and its executions' heartbeats. RQ uses 30 s; a
# shorter interval lets a dead worker's jobs be recovered sooner (see worker/recovery.py).
HEARTBEAT_INTERVAL_SECONDS = 5.0
# A worker whose hash has not been refreshed for this long is taken for dead.
WORKER_TTL_SECONDS = 15
# How long the dequeue loop blocks on Redis before it re-checks stop requests.
DEQUEUE_BLOCK_SECONDS = 1
MAINTENANCE_INTERVAL_SECONDS = 10.0

SHUTDOWN_TIMEOUT_SECONDS = 30.0
# Seconds to wait for Redis at start before giving up (0: wait forever).
REDIS_WAIT_SECONDS = 60.0
REDIS_BACKOFF_MAX_SECONDS = 5.0

MAX_JOBS_PER_CHILD = 0  # 0: never recycle pool children
MAX_CHILD_MEMORY_MB = 0  # 0: no memory guard
MAX_REDELIVERIES = 3
# Most bytes of one job hash (field names and values) and of its payload once inflated. RQ
# stores ``data`` zlib-compressed: 400 KiB of it inflated to 400 MiB (2 GiB peak RSS) before
# this cap. A built-in job's hash is ~1 KiB; 4 MiB leaves room for large arguments.
MAX_JOB_BYTES = 4 * 1024 * 1024
RECOVERY_INTERVAL_SECONDS = 5.0

METRICS_PORT = 8000
METRICS_ADDRESS = "127.0.0.1"
METRICS_SAMPLE_INTERVAL_SECONDS = 2.0
# Distinct values of the metrics' ``function`` label (functions that resolved); beyond: "other".
MAX_FUNCTION_LABELS = 100

LOG_LEVEL = "INFO"
