"""poolq benchmark: strategies x workloads against RQ's own workers, on a private redis-server.

    python -m bench.run                                   # every strategy and workload, 3 repeats
    python -m bench.run --workloads noop,cpu,io --baselines
    python -m bench.run --quick --baselines               # smoke run: small counts, 1 repeat

``python bench/run.py ...`` works too. The rooms: :mod:`bench.catalog` (what runs),
:mod:`bench.procs` (starting and reaping processes, the private redis-server),
:mod:`bench.limits` (the limits "% of limit" is relative to), :mod:`bench.cell` (one worker run),
:mod:`bench.table` (the Markdown report), :mod:`bench.cli` (flags and the main loop).
See bench/README.md for the columns, the method and the caveats.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: the repository root, as `python -m` has it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main
from bench.procs import cleanup_all

if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup_all()
