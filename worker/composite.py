"""The public hint API under the name the README documents: ``@worker.composite.cpu_bound`` and
``@worker.composite.io_bound`` (and :func:`parse_hint`).

A thin alias of :mod:`worker.hints`, kept so job modules written against it keep working. It
imports the standard library only: job modules that use it are imported in the pool children.
The strategies themselves live in ``worker/strategies/`` (``hybrid.py``, ``auto.py``,
``routing.py``).
"""

from worker.hints import CPU, HINT_META_KEY, IO, cpu_bound, io_bound, parse_hint

__all__ = ["CPU", "HINT_META_KEY", "IO", "cpu_bound", "io_bound", "parse_hint"]
