"""Worker configuration: environment variables (``REDIS_URL``, ``WORKER_*``), CLI flags on top.

Invalid values are refused at start with one line naming the variable and what it accepts;
a worker that starts with a typo in its configuration is worse than one that does not start.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import defaults


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", frozen=True, populate_by_name=True)

    redis_url: str = Field(defaults.REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "WORKER_REDIS_URL"))
    strategy: Literal["thread", "process", "inline", "hybrid", "auto"] = defaults.STRATEGY  # type: ignore[assignment]
    concurrency: str = defaults.CONCURRENCY
    queues: str = ",".join(defaults.QUEUES)
    name: str | None = None
    burst: bool = False
    serializer: Literal["json", "pickle"] = defaults.SERIALIZER  # type: ignore[assignment]
    allowed_functions: str = ",".join(defaults.ALLOWED_FUNCTIONS)
    threads_per_cpu: int = Field(defaults.THREADS_PER_CPU, ge=1, le=1024)
    processes: int = Field(defaults.PROCESSES, ge=0, le=1024)
    threads_per_process: int = Field(defaults.THREADS_PER_PROCESS, ge=0, le=1024)
    job_timeout_seconds: int = Field(defaults.JOB_TIMEOUT_SECONDS, ge=1)
    result_ttl_seconds: int = Field(defaults.RESULT_TTL_SECONDS, ge=-1)
    heartbeat_interval_seconds: float = Field(defaults.HEARTBEAT_INTERVAL_SECONDS, gt=0, le=300)
    worker_ttl_seconds: int = Field(defaults.WORKER_TTL_SECONDS, ge=3, le=3600)
    maintenance_interval_seconds: float = Field(defaults.MAINTENANCE_INTERVAL_SECONDS, gt=0)
    shutdown_timeout: float = Field(
        defaults.SHUTDOWN_TIMEOUT_SECONDS,
        ge=0,
        validation_alias=AliasChoices("WORKER_SHUTDOWN_TIMEOUT", "WORKER_SHUTDOWN_TIMEOUT_SECONDS"),
    )
    redis_wait: float = Field(
        defaults.REDIS_WAIT_SECONDS,
        ge=0,
        validation_alias=AliasChoices("WORKER_REDIS_WAIT", "WORKER_REDIS_WAIT_SECONDS"),
    )
    max_jobs_per_child: int = Field(defaults.MAX_JOBS_PER_CHILD, ge=0)
    max_child_memory_mb: float = Field(defaults.MAX_CHILD_MEMORY_MB, ge=0)
    max_redeliveries: int = Field(defaults.MAX_REDELIVERIES, ge=0)
    recovery_interval_seconds: float = Field(defaults.RECOVERY_INTERVAL_SECONDS, gt=0)
    metrics_port: int = Field(defaults.METRICS_PORT, ge=0, le=65535)
    metrics_address: str = defaults.METRICS_ADDRESS
    metrics_sample_interval_seconds: float = Field(defaults.METRICS_SAMPLE_INTERVAL_SECONDS, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = defaults.LOG_LEVEL  # type: ignore[assignment]

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v == "auto":
            return v
        if not v.isdigit() or not 1 <= int(v) <= 4096:
            raise ValueError("must be 'auto' or a whole number from 1 to 4096")
        return v

    @field_validator("queues", "allowed_functions")
    @classmethod
    def _non_empty_list(cls, v: str) -> str:
        items = [s.strip() for s in str(v).split(",") if s.strip()]
        if not items:
            raise ValueError("must name at least one entry (comma-separated)")
        return ",".join(items)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @property
    def queue_names(self) -> list[str]:
        return self.queues.split(",")

    @property
    def allowed_patterns(self) -> list[str]:
        return self.allowed_functions.split(",")


ENV_NAMES = {
    "redis_url": "REDIS_URL",
    "shutdown_timeout": "WORKER_SHUTDOWN_TIMEOUT",
    "redis_wait": "WORKER_REDIS_WAIT",
}


def env_name(field: str) -> str:
    return ENV_NAMES.get(field, "WORKER_" + field.upper())


def describe_error(exc: ValidationError) -> str:
    """One line for the first invalid value: which variable or flag, what it got, what it wants."""
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    name = field if field in ENV_NAMES.values() or field.startswith("WORKER_") else env_name(field)
    flag = "--" + field.replace("_", "-") if not field.isupper() else ""
    value = err.get("input")
    where = f"{name} / {flag}" if flag else name
    return f"invalid configuration: {where}={value!r}: {err['msg']}"
