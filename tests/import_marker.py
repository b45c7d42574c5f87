"""A module that must never be imported by a worker: importing it creates the file named by
``POOLQ_TEST_IMPORT_MARKER``, calling its callback the one named by ``POOLQ_TEST_CALL_MARKER``.

Jobs name its functions as callbacks while ``tests.import_marker.*`` is outside the allowlist;
the files prove whether the worker imported the module or called the function (in any process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_IMPORT_MARKER = os.environ.get("POOLQ_TEST_IMPORT_MARKER")
if _IMPORT_MARKER:
    Path(_IMPORT_MARKER).write_text(f"imported in pid {os.getpid()}\n")


def callback(*args: Any) -> None:
    marker = os.environ.get("POOLQ_TEST_CALL_MARKER")
    if marker:
        Path(marker).write_text(f"called in pid {os.getpid()}\n")
