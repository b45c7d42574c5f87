"""A claim of the articles in ``seeds/``, checked against one experiment's numbers.

Each claim is one small object: its number and title, the articles' words (quoted with their
source), what it needs to be judged, and :meth:`Claim.judge`, which turns this run's numbers
into what was measured and a verdict, with the thresholds written next to it. A different
machine may well get a different verdict; that is the point.

To add a claim: a subclass in the module of its topic, and one entry in
:data:`producer.claims.CLAIMS` (the report numbers them in that order).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

from producer.view import View

SOURCES = {
    "A": "“Multiprocessing vs Threading in Python: Pros & Cons”",
    "B": "“Threading vs Multiprocessing - Advanced Python 15”",
    "C": "“Multithreading vs Multiprocessing in Python” (N. Chauhan)",
    "D": "“Python threading and multiprocessing guide” (concurrency vs parallelism)",
}
NOT_MEASURED = "not measured"


@dataclass
class Finding:
    """What this run measured about a claim (lines of the report), and the verdict."""

    measured: list[str] = field(default_factory=list)
    verdict: str = NOT_MEASURED


class Claim(abc.ABC):
    title: ClassVar[str]
    quotes: ClassVar[tuple[tuple[str, str], ...]]  # (source key, the article's words)
    needs: ClassVar[str]  # printed when nothing was measured

    @abc.abstractmethod
    def judge(self, v: View) -> Finding: ...

    def render(self, n: int, v: View) -> list[str]:
        finding = self.judge(v)
        out = [f"### {n}. {self.title}", ""]
        for src, q in self.quotes:
            out.append(f"> “{q}” — {SOURCES[src]}")
            out.append(">")
        if out[-1] == ">":
            out.pop()
        out += ["", *(finding.measured or [self.needs]), "", f"**Verdict: {finding.verdict}**", ""]
        return out
