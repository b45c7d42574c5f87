"""Where an experiment's workers run: the three backends and the one place that picks one.

See :mod:`producer.backends.base` for the interface.
"""

from __future__ import annotations

from producer.backends.base import Backend
from producer.backends.docker import DockerBackend
from producer.backends.local import LocalBackend
from producer.backends.running import RunningBackend
from producer.options import Options


def select(opts: Options) -> Backend:
    """``--docker``, ``--local``, or (neither) the workers already running."""
    if opts.docker is not None:
        return DockerBackend(opts, opts.docker)
    if opts.local:
        return LocalBackend(opts)
    return RunningBackend(opts)
