"""Records as flat JSON objects: how :mod:`producer.results` reads and writes its dataclasses.

A record's fields are the keys of its object; a field marked :data:`NESTED` holds another record
(or None) whose keys are spread into the same object, so the file stays flat while the code
reads ``cell.figures.wait_p95_s``. Reading takes the keys that name fields and leaves the rest
at their defaults: a file from an older version, with fewer keys, still loads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
NESTED = {"nested": True}  # a field holding a record (or None) whose keys are spread into the parent's


def strict_json(obj: Any) -> Any:
    """NaN/inf -> None (recursively) so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def flat(record: DataclassInstance) -> dict[str, Any]:
    """A record's own fields (not its nested records) as a JSON object."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if not f.metadata.get("nested")}


def pick(cls: type[R], data: dict[str, Any], **nested: Any) -> R:
    """``cls`` from the keys of ``data`` that name its own fields (the others keep their defaults);
    its nested records are given as keywords."""
    names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("nested")}
    return cls(**{k: v for k, v in data.items() if k in names}, **nested)
