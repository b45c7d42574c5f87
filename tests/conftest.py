"""The fixtures every test may use: ``redis-server`` processes on free loopback ports.

The helpers themselves are the ``support`` package (tests/support/): one ``RedisServer``, one
``free_port``, the worker-process and RQ helpers.

- ``redis_server`` (session): one server, no persistence, shared by the whole run.
- ``redis_url`` / ``redis``: its URL, and a client whose database is flushed before and after
  each test.
- ``make_redis_server`` (function): starts more servers, e.g. with AOF on for outage tests
  (``stop()``, ``kill()``, ``restart()`` on the same port and data directory).

Worker processes started through ``support.workers`` are killed after every test (autouse).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import redis as redis_lib
from support.redis_server import RedisServer
from support.workers import cleanup_processes


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Starts extra servers (AOF on by default); all are stopped when the test ends."""
    servers: list[RedisServer] = []

    def make(appendonly: bool = True, start: bool = True) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis-extra"), appendonly=appendonly)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:  # a test may have stopped it; bring it back for the others
        redis_server.start()
    return redis_server.url


@pytest.fixture(name="redis")
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A client of the session's redis-server; the database is empty at start and flushed at end."""
    conn = redis_lib.Redis.from_url(redis_url)
    conn.flushall()
    yield conn
    cleanup_processes()  # no worker may write after the flush
    with contextlib.suppress(redis_lib.exceptions.RedisError):
        conn.flushall()
    conn.close()


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Kills every worker a test started (and its process group), pass or fail."""
    yield
    cleanup_processes()
