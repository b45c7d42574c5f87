"""A job hash can fail only itself: keys of the wrong type, oversized payloads, bad fields.

Anyone who can write to Redis can write any key. Before this, one job key SET to a string
stopped every worker that dequeued it (the dequeue script failed with WRONGTYPE) and every
restart (recovery failed the same way); a 400 KiB zlib payload inflated to 400 MiB in the
worker; a few field values left their job ``started`` for good or desynchronised a pool slot.

Real ``redis-server`` (conftest), real worker processes for every strategy in the registry,
stock RQ to enqueue and read back. Memory is the worker's whole process tree (RSS of the worker
and its pool children), sampled with psutil while the hostile jobs are read; the bound is on
its growth over the tree's own baseline, far below the inflated size. No timing is asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psutil
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import now
from support import metrics as mh
from support.base import free_port, wait_for
from support.rq_jobs import enqueue_many, json_queue
from support.workers import new_name, run_worker, start_worker, stop, wait_registered, worker_hash

from worker.strategies import STRATEGIES

ALL = sorted(STRATEGIES)
MiB = 1024 * 1024
QUARANTINE = "poolq:quarantine"

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------
# helpers


def failure_of(conn: Redis, job_id: str) -> str:
    """The reason of the job's latest failed Result, read through a stub (the key may be no hash)."""
    stub = Job(job_id, connection=conn, serializer=JSONSerializer)
    result = Result.fetch_latest(stub, serializer=JSONSerializer)
    return (result.exc_string or "") if result is not None and result.type == Result.Type.FAILED else ""


def status(conn: Redis, job_id: str) -> str | None:
    if conn.type(f"rq:job:{job_id}") != b"hash":
        return None
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return None if raw is None else raw.decode()


def hash_exc_info(conn: Redis, job_id: str) -> str:
    """The ``exc_info`` field of a job hash, as RQ reads it (zlib-compressed or plain)."""
    raw = conn.hget(f"rq:job:{job_id}", "exc_info") or b""
    try:
        return zlib.decompress(raw).decode(errors="replace")
    except zlib.error:
        return raw.decode(errors="replace")


def quarantined(conn: Redis) -> dict[str, str]:
    """job id -> reason, from the worker's capped quarantine stream."""
    return {e[b"job_id"].decode(): e[b"reason"].decode() for _, e in conn.xrange(QUARANTINE)}


def failed_ids(conn: Redis, queue: str = "default") -> set[str]:
    return set(FailedJobRegistry(queue, connection=conn).get_job_ids())


def good_jobs(conn: Redis, n: int, queue: str = "default") -> list[str]:
    return [j.id for j in enqueue_many(conn, "worker.jobs.noop", n, queue)]


def corrupt(conn: Redis, fields: dict[str, Any], *, failing: bool = False) -> str:
    """A stock RQ job with hostile values written into its hash, queued in the same transaction
    (a running worker must not take it before the values are in). ``failing``: its function
    raises (an unexpected keyword), so its failure path runs too."""
    q = json_queue(conn)
    job = q.create_job("worker.jobs.noop", kwargs={"no_such_argument": 1} if failing else None)
    job.enqueued_at = now()
    with conn.pipeline() as p:
        job.save(pipeline=p)
        p.hset(job.key, mapping=fields)
        p.rpush(q.key, job.id)
        p.execute()
    return job.id


def wait_finished(conn: Redis, ids: list[str], proc: Any = None, timeout: float = 60.0) -> None:
    def done() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited: {proc.describe()}")
        return all(status(conn, i) == "finished" for i in ids)

    try:
        wait_for(done, timeout, 0.1, "the good jobs to finish")
    except AssertionError as e:
        detail = proc.describe() if proc is not None else ""
        raise AssertionError(f"{e}; statuses {[status(conn, i) for i in ids]}\n{detail}") from None


class TreeRss:
    """Samples the RSS of a process and all its descendants every 20 ms; ``peak`` and ``baseline``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.02)

    @contextlib.contextmanager
    def watching(self) -> Iterator[TreeRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def zlib_bomb(inflated: int) -> bytes:
    """A JSON job payload whose one argument is ``inflated`` bytes of '0', compressed (~1/1000)."""
    c = zlib.compressobj(9)
    parts = [c.compress(b'["worker.jobs.noop", null, ["')]
    chunk = b"0" * MiB
    for _ in range(inflated // MiB):
        parts.append(c.compress(chunk))
    parts += [c.compress(b'"], {}]'), c.flush()]
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# keys of the wrong type, ids RQ refuses


@pytest.mark.parametrize("strategy", ALL)
def test_a_job_key_of_the_wrong_type_fails_alone_and_the_jobs_behind_it_run(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """Queued among good jobs: an id whose ``rq:job:<id>`` is a string (the found bug: WRONGTYPE
    stopped the worker, for good), an id with a space and a colon (``Job(id)`` refuses it), one
    that is not UTF-8 and one of 100,000 bytes. The worker keeps running; the good jobs finish;
    the string key is left as it is, its id is in FailedJobRegistry with a failed Result saying
    why; every bad entry is in the quarantine stream with its reason; the intermediate list is
    empty; SIGTERM then stops the worker with exit 0."""
    q = json_queue(redis)
    good = good_jobs(redis, 2)
    redis.set("rq:job:wrong-type-1", "not a hash")
    redis.rpush(q.key, "wrong-type-1")
    good += good_jobs(redis, 2)
    redis.rpush(q.key, "bad id:1", b"\xff\xfe-not-utf8", "x" * 100_000)
    good += good_jobs(redis, 2)

    worker = start_worker(redis_url, strategy, 2)
    wait_finished(redis, good, worker)
    wait_for(lambda: len(quarantined(redis)) >= 4, 20, 0.1, "four quarantine entries")
    assert worker.poll() is None, worker.describe()

    assert redis.get("rq:job:wrong-type-1") == b"not a hash"  # not ours to overwrite
    assert "wrong-type-1" in failed_ids(redis)
    reason = failure_of(redis, "wrong-type-1")
    assert "WrongTypeKey" in reason and "holds a string" in reason, reason
    entries = quarantined(redis)
    assert "holds a string" in entries["wrong-type-1"], entries
    assert "not an RQ job id" in entries["bad id:1"], entries
    assert any("not an RQ job id" in r for k, r in entries.items() if k.startswith("b'")), entries
    assert any("IdTooLong" in r and "100000 bytes" in r for r in entries.values()), entries
    assert redis.llen(q.key) == 0 and redis.llen(q.intermediate_queue_key) == 0
    assert stop(worker, timeout=30) == 0, worker.describe()


@pytest.mark.parametrize("strategy", ALL)
def test_a_worker_starts_with_wrong_type_keys_where_recovery_looks_and_runs_its_jobs(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """What a dead worker can leave behind, as start-up recovery finds it: in the started
    registry, an execution of a dead worker whose job key is a string, a member that is not an
    RQ id, and a genuine job of a dead worker; in the intermediate list (stuck long enough to be
    recovered), a job key that is a string and ids RQ refuses. The burst worker starts (it used to
    exit 1 in recovery, at every restart), re-queues and runs the genuine job, runs the queued
    one, fails the string-keyed ones with the reason, and leaves both lists empty."""
    q = json_queue(redis)
    started, inter = q.started_job_registry.key, q.intermediate_queue_key
    later = time.time() + 1000
    redis.set("rq:job:wt-started", "x")
    redis.zadd(started, {"wt-started:e1": later, "not an id:e2": later})
    redis.hset("rq:execution:wt-started:e1", mapping={"worker_name": "gone-worker", "job_id": "wt-started"})
    genuine = q.enqueue("worker.jobs.noop")
    redis.lrem(q.key, 0, genuine.id)
    redis.hset(genuine.key, "status", "started")
    redis.zadd(started, {f"{genuine.id}:e3": later})
    redis.hset(f"rq:execution:{genuine.id}:e3", mapping={"worker_name": "gone-worker", "job_id": genuine.id})
    redis.set("rq:job:wt-inter", "x")
    redis.rpush(inter, "wt-inter", b"\xff\xfe", "bad id")
    redis.set("poolq:intermediate_seen:wt-inter", time.time() - 3600)  # seen stuck an hour ago
    queued = good_jobs(redis, 1)

    run = run_worker(redis_url, strategy, 2, timeout=90)
    assert run.returncode == 0, run.describe()
    assert status(redis, genuine.id) == "finished" and status(redis, queued[0]) == "finished", run.describe()
    failed = failed_ids(redis)
    for job_id in ("wt-started", "wt-inter"):
        assert job_id in failed, run.describe()
        reason = failure_of(redis, job_id)
        assert "could not be recovered" in reason and "WrongTypeKey" in reason, reason
    entries = quarantined(redis)
    assert "not an RQ job id" in entries["not an id:e2"], entries
    assert "not an RQ job id" in entries["bad id"], entries
    assert redis.zcard(started) == 0, redis.zrange(started, 0, -1)
    assert redis.llen(inter) == 0, redis.lrange(inter, 0, -1)


@pytest.mark.parametrize("strategy", ALL)
def test_a_queue_of_the_wrong_type_is_skipped_and_the_other_queues_served(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """``rq:queue:broken`` SET to a string, and ``rq:queue:stuck`` a list whose intermediate list
    is a string, listed before ``default``: the burst worker serves ``default`` to the end and
    exits 0 (it used to exit 1 at the first dequeue), saying once per queue that it skips it."""
    redis.set("rq:queue:broken", "x")
    redis.rpush("rq:queue:stuck", "some-job")
    redis.set("rq:queue:stuck:intermediate", "x")
    good = good_jobs(redis, 4)

    run = run_worker(redis_url, strategy, 2, queues="broken,stuck,default", timeout=90)
    assert run.returncode == 0, run.describe()
    assert all(status(redis, i) == "finished" for i in good), run.describe()
    for name in ("broken", "stuck"):
        lines = [ln for ln in run.stderr.splitlines() if f"queue {name} cannot be read" in ln]
        assert len(lines) == 1, run.describe()
    assert redis.lrange("rq:queue:stuck", 0, -1) == [b"some-job"]  # nothing was taken from it


# ---------------------------------------------------------------------------------------------
# sizes


@pytest.mark.parametrize("strategy", ALL)
def test_payloads_beyond_the_cap_fail_unread_and_the_worker_tree_stays_small(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """Three jobs over the default cap (WORKER_MAX_JOB_BYTES, 4 MiB): ``data`` that inflates to
    256 MiB (a ~256 KiB zlib bomb), ``exc_info`` that does the same, and a 64 MiB ``meta`` field
    stored as it is. Each fails with JobTooLarge and the reason, a good job after them finishes,
    and the worker tree's peak RSS grows by less than 100 MiB over its baseline (it used to
    inflate the whole payload: 400 KiB -> 400 MiB, ~2 GiB peak)."""
    worker = start_worker(redis_url, strategy, 1)
    wait_registered(redis, worker)
    rss = TreeRss(worker.pid)
    time.sleep(1.0)  # pool children started
    baseline = max(rss.sample() for _ in range(5))
    with rss.watching():
        bomb = corrupt(redis, {"data": zlib_bomb(256 * MiB)})
        exc_bomb = corrupt(redis, {"exc_info": zlib_bomb(256 * MiB)})
        big_meta = corrupt(redis, {"meta": '{"pad": "' + "x" * (64 * MiB) + '"}'})
        good = good_jobs(redis, 1)
        wait_finished(redis, good, worker)
        wait_for(lambda: {bomb, exc_bomb, big_meta} <= failed_ids(redis), 20, 0.1, "the big jobs to fail")
    growth = rss.peak - baseline
    print(f"\n{strategy}: tree RSS baseline {baseline / MiB:.0f} MiB, peak {rss.peak / MiB:.0f} MiB")
    assert growth < 100 * MiB, f"tree RSS grew by {growth / MiB:.0f} MiB\n{worker.describe()}"
    for job_id, says in ((bomb, "inflates to more than"), (exc_bomb, "inflates to more than"), (big_meta, "bytes")):
        assert status(redis, job_id) == "failed"
        reason = failure_of(redis, job_id)
        assert "JobTooLarge" in reason and says in reason and "WORKER_MAX_JOB_BYTES" in reason, reason
    assert worker.poll() is None, worker.describe()


def test_max_job_bytes_is_a_setting_and_a_bad_value_is_one_line(redis: Redis, redis_url: str) -> None:
    """``--max-job-bytes 65536``: a job whose payload inflates to ~100 KiB, and one whose hash is
    ~100 KiB as stored (incompressible ``meta``), fail with the cap in their reason; a small one
    runs. ``WORKER_MAX_JOB_BYTES=12`` is refused at start with one line naming the variable, exit 2."""
    q = json_queue(redis)
    inflates = q.enqueue("worker.jobs.noop", os.urandom(50_000).hex()).id
    stored = corrupt(redis, {"meta": json.dumps({"pad": os.urandom(50_000).hex()})})
    small = good_jobs(redis, 1)
    run = run_worker(redis_url, "thread", 1, extra_args=("--max-job-bytes", "65536"))
    assert run.returncode == 0, run.describe()
    assert status(redis, small[0]) == "finished"
    for job_id, says in ((inflates, "payload inflates to more than"), (stored, "the job hash is")):
        reason = failure_of(redis, job_id)
        assert "JobTooLarge" in reason and says in reason and "WORKER_MAX_JOB_BYTES (65536 bytes)" in reason, reason

    bad = run_worker(redis_url, "thread", 1, env={"WORKER_MAX_JOB_BYTES": "12"}, timeout=30)
    assert bad.returncode == 2, bad.describe()
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "WORKER_MAX_JOB_BYTES" in lines[0], bad.stderr


# ---------------------------------------------------------------------------------------------
# field values


@pytest.mark.parametrize("strategy", ALL)
def test_field_values_the_worker_cannot_act_on_fail_only_their_job(redis: Redis, redis_url: str, strategy: str) -> None:
    """Values measured to break a job outside its own failure handling, among good jobs and a
    job with no timeout (``job_timeout=-1``, legitimate RQ): a timeout of 10**8 s (the process
    pools' poll() overflowed after the job was sent: the slot's next job read its reply) and of
    10**30 s; ``retry_intervals`` that are a string or out of range, ``dependency_ids`` that are
    an object, a ``failure_ttl`` of 10**18 s on a failing job (each left the job ``started`` for
    good: its failure could not be recorded); a ``result_ttl`` of 10**18 s (Redis refused the
    EXPIRE half-way through the finish script). Each bad job fails with a reason naming the
    field; the good ones and the one without timeout finish; nothing stays started; the worker
    keeps running."""
    q = json_queue(redis)
    good = good_jobs(redis, 2)
    good.append(q.enqueue("worker.jobs.noop", job_timeout=-1).id)
    bad = [
        ("timeout", corrupt(redis, {"timeout": str(10**8)})),
        ("timeout", corrupt(redis, {"timeout": str(10**30)})),
        ("retry_intervals", corrupt(redis, {"retries_left": "2", "retry_intervals": '"abc"'}, failing=True)),
        ("retry_intervals", corrupt(redis, {"retries_left": "2", "retry_intervals": "[-1e20]"}, failing=True)),
        ("dependency_ids", corrupt(redis, {"dependency_ids": '{"a": 1}'})),
        ("failure_ttl", corrupt(redis, {"failure_ttl": str(10**18)}, failing=True)),
        ("result_ttl", corrupt(redis, {"result_ttl": str(10**18)})),
    ]
    good += good_jobs(redis, 3)

    worker = start_worker(redis_url, strategy, 2)
    wait_finished(redis, good, worker)
    wait_for(lambda: {i for _, i in bad} <= failed_ids(redis), 30, 0.1, "the bad jobs to fail")
    problems = []
    for field, job_id in bad:
        reason = failure_of(redis, job_id)
        named = f"{field} must be" in reason or re.search(rf"{field} \S+ is out of range", reason)
        if status(redis, job_id) != "failed" or not named:
            problems.append(f"{field}: status {status(redis, job_id)}, reason {reason[-300:]!r}")
    assert not problems, "\n".join(problems) + "\n" + worker.describe()
    assert StartedJobRegistry("default", connection=redis).get_job_ids() == []
    assert worker.poll() is None, worker.describe()
    assert stop(worker, signal.SIGTERM, timeout=30) == 0, worker.describe()


def test_a_scheduled_job_key_of_the_wrong_type_does_not_hold_up_the_others(redis: Redis, redis_url: str) -> None:
    """RQ's scheduler fetches due jobs as one batch: one id in the scheduled registry whose key
    is a string failed the batch at every tick, so no scheduled job of that queue (Retry
    intervals, ``enqueue_in``) ran again. Now that id is dropped and the good scheduled job runs.
    The scheduler is the same in every strategy; the thread worker stands for all."""
    q = json_queue(redis)
    redis.set("rq:job:wt-scheduled", "x")
    redis.zadd("rq:scheduled:default", {"wt-scheduled": 1})
    later = q.enqueue_in(timedelta(seconds=1), "worker.jobs.noop")
    worker = start_worker(redis_url, "thread", 2)
    wait_finished(redis, [later.id], worker, timeout=30)
    assert redis.zcard("rq:scheduled:default") == 0
    assert "wt-scheduled cannot be read" in worker.output(), worker.describe()


def test_the_metrics_keep_every_readable_queue_and_count_the_refused_jobs(redis: Redis, redis_url: str) -> None:
    """With ``rq:queue:broken`` a string beside ``default``: the queue-size gauge still reports
    ``default`` (one failing LLEN used to drop every queue's figures) and the job whose key is a
    string counts in ``poolq_malformed_jobs_total``. Metrics are the same in every strategy."""
    redis.set("rq:queue:broken", "x")
    q = json_queue(redis)
    redis.set("rq:job:wrong-type-m", "x")
    redis.rpush(q.key, "wrong-type-m")
    good = good_jobs(redis, 3)
    port = free_port()
    worker = start_worker(
        redis_url,
        "thread",
        2,
        queues="broken,default",
        extra_args=("--metrics-port", str(port)),
        env={"WORKER_METRICS_SAMPLE_INTERVAL_SECONDS": "0.2"},
    )
    wait_finished(redis, good, worker)

    def settled() -> mh.Samples | None:
        samples = mh.scrape(port)
        if samples is None or mh.total(samples, "poolq_queue_jobs", queue="default", state="finished") != 3:
            return None
        return samples

    samples = wait_for(settled, 20, 0.2, "default's finished jobs in poolq_queue_jobs")
    assert mh.total(samples, "poolq_malformed_jobs_total", queue="default") == 1
    assert not mh.select(samples, "poolq_queue_jobs", queue="broken", state="queued")
    assert worker.poll() is None, worker.describe()


@pytest.mark.parametrize("strategy", ALL)
def test_a_job_key_of_the_wrong_type_at_start_or_finish_fails_the_job_with_nothing_half_written(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """Keys a job's start and finish write besides its hash, SET to strings beforehand: its
    execution registry ``rq:executions:<id>`` (written at start) and its results stream
    ``rq:results:<id>`` (written at finish). The start and finish scripts check key types before
    writing: each job fails alone, naming the key, nothing stays started, and the worker's own
    counters count only what ran to the end (the finish used to fail half-way: the job was
    counted successful, then failed)."""
    q = json_queue(redis)
    at_start = q.enqueue("worker.jobs.noop").id
    redis.set(f"rq:executions:{at_start}", "x")
    at_finish = q.enqueue("worker.jobs.noop").id
    redis.set(f"rq:results:{at_finish}", "x")
    good = good_jobs(redis, 3)

    name = new_name()
    run = run_worker(redis_url, strategy, 1, name=name, timeout=90)
    assert run.returncode == 0, run.describe()
    assert all(status(redis, i) == "finished" for i in good), run.describe()
    for job_id, key in ((at_start, f"rq:executions:{at_start}"), (at_finish, f"rq:results:{at_finish}")):
        assert status(redis, job_id) == "failed", run.describe()
        assert job_id in failed_ids(redis)
        # Its results stream being a string, the finish-time failure is in the hash's exc_info.
        reason = failure_of(redis, job_id) if job_id == at_start else hash_exc_info(redis, job_id)
        assert f"{key} holds a string" in reason, reason
    assert StartedJobRegistry("default", connection=redis).get_job_ids() == []
    assert not redis.keys(f"rq:execution:{at_start}:*")
    counts = worker_hash(redis, name)
    assert int(counts.get("successful_job_count", 0)) == len(good), counts
