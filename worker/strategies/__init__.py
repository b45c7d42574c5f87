"""How jobs run: one small class per strategy, picked by name from :data:`STRATEGIES`.

``base`` holds the interface the dequeue loop talks to (``worker/pool_worker.py`` never asks
which strategy it has); each strategy is one module (``thread``, ``process``, ``inline``,
``hybrid``, ``auto`` with its router in ``routing``); ``slots`` are the lifecycle threads they
share, ``children`` the parent's side of every pool child, ``threaded_pool`` hybrid's children
and ``places`` auto's sub-pool places. Adding a strategy: a module with a
:class:`~worker.strategies.base.Strategy` subclass and one line below (the CLI, the tests'
strategy lists and the producer's sizing read this registry), and its name in
``worker.defaults.STRATEGIES`` (the settings' choices, checked before anything is imported).

Code that runs in a pool child must not import this package (it imports rq through the
strategies): the children run ``worker/poolchild.py`` and the job's own module only.
"""

from worker.strategies.auto import AutoStrategy
from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.hybrid import HybridStrategy
from worker.strategies.inline import InlineStrategy
from worker.strategies.process import ProcessStrategy
from worker.strategies.thread import ThreadStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "thread": ThreadStrategy,
    "process": ProcessStrategy,
    "inline": InlineStrategy,
    "hybrid": HybridStrategy,
    "auto": AutoStrategy,
}

__all__ = ["STRATEGIES", "Strategy", "StrategyConfig"]
