"""The argparse parser both CLIs use (``python -m worker``, ``python -m producer``).

Two things argparse does by default that a service's command line must not:
- print the whole usage block on a bad flag: here it is one line and exit code 2, like every
  other invalid value (the settings' errors);
- take a prefix of a flag for the flag (``--max-jobs 3`` silently meant
  ``--max-jobs-per-child 3``): a flag that is not spelled out is an error here, in
  sub-commands' parsers too.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """Bad flags get one line, not the whole usage block; flags are never abbreviated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # sub-parsers are made by this class with the same default
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
