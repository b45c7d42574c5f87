"""The claim about stopping a job: a process can be killed at its timeout, a thread cannot."""

from __future__ import annotations

import math

from producer.claims.base import Claim, Finding
from producer.fmt import f
from producer.view import View


class ProcessesAreKillable(Claim):
    title = "Processes can be killed at a timeout, threads cannot"
    quotes = (
        ("B", "Child processes are interruptable/killable"),
        ("B", "Not interruptible/killable -> be careful with memory leaks"),
    )
    needs = "No timeout runs."

    def judge(self, v: View) -> Finding:
        rows = {t.strategy: t for t in v.r.timeouts}
        out = Finding()
        if not rows:
            return out
        for strat, t in rows.items():
            out.measured.append(
                f"{strat}: job {t.status} after {f(t.failed_after_s, 2)} s, next job started after "
                f"{f(t.next_job_started_after_s, 2)} s, its code burned CPU until {f(t.cpu_burned_until_s, 2)} s."
            )
        t6, p6 = rows.get("thread"), rows.get("process")
        if t6 and p6:
            # The code stopped when the tree stopped burning CPU within a second of the timeout.
            jt = float(t6.job_timeout_s)
            pr_stopped = (p6.cpu_burned_until_s or math.inf) <= jt + 1.0
            th_ran_on = (t6.cpu_burned_until_s or 0.0) > jt + 1.0
            if pr_stopped and th_ran_on:
                out.verdict = (
                    f"agrees — the process was killed at its {jt:g} s timeout; the thread's code ran on to "
                    f"{f(t6.cpu_burned_until_s, 1)} s (poolq fails the job and replaces the thread's slot, "
                    "but the CPU stays taken)."
                )
            else:
                out.verdict = "disagrees — see the numbers above."
        return out
