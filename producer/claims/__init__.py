"""The articles' claims, in the order the report numbers them (see :mod:`producer.claims.base`)."""

from __future__ import annotations

from producer.claims.base import SOURCES, Claim
from producer.claims.cost import ProcessesCostMemory, ProcessesPayIpc, ProcessesStartSlower
from producer.claims.killing import ProcessesAreKillable
from producer.claims.speed import ProcessesScaleCpu, ThreadsDoNotSpeedUpCpu, ThreadsSuitIo
from producer.view import View

CLAIMS: tuple[Claim, ...] = (
    ThreadsDoNotSpeedUpCpu(),
    ProcessesScaleCpu(),
    ThreadsSuitIo(),
    ProcessesCostMemory(),
    ProcessesStartSlower(),
    ProcessesAreKillable(),
    ProcessesPayIpc(),
)


def render(v: View) -> list[str]:
    """Every claim's section of the report, numbered from 1."""
    return [line for n, claim in enumerate(CLAIMS, 1) for line in claim.render(n, v)]


__all__ = ["CLAIMS", "SOURCES", "Claim", "render"]
