"""A named daemon thread that runs one loop until stopped: the samplers' shared start/stop.

The process-tree sampler, the container stats reader and the worker metrics probe each run a
loop on a thread while a cell runs; the loop watches :attr:`LoopThread.stopping` to end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class LoopThread:
    """Runs ``target`` on a daemon thread from :meth:`start`; :meth:`stop` signals and joins it."""

    def __init__(self, target: Callable[[], None], name: str, join_timeout: float = 5.0) -> None:
        self.target = target
        self.name = name
        self.join_timeout = join_timeout
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self.target, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            self._thread = None
