"""What the tests share, one module per role (the fixtures themselves live in tests/conftest.py).

- ``support.base``: ``REPO_ROOT``, ``PYTHON``, :func:`free_port`, :func:`wait_for`;
- ``support.redis_server``: :class:`RedisServer`, the one ``redis-server`` the tests start;
- ``support.workers``: worker processes (run, start, signal, stop, kill, clean up);
- ``support.rq_jobs``: queues and jobs as stock RQ reads them;
- ``support.metrics``: ``/metrics`` scraping, a real Prometheus, the PromQL of docs/metrics.md;
- ``support.docker_engine``: a Docker engine for the container tests.

The job functions workers run for the tests are not here: they are ``tests.jobs`` (and
``tests.security_jobs``, ``tests.composite_jobs``), imported by the worker by dotted name.
"""
