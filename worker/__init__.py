"""poolq worker: an RQ 3-compatible worker that runs jobs in a thread, process or inline pool."""

__version__ = "0.1.0"
