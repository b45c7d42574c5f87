"""The RQ-compatible job lifecycle, without the dequeue loop around it.

- ``scripts``: the Lua of the dequeue (move + read in one round trip) and of applying RQ's writes;
- ``dequeue``: taking up to one job per free slot off the queues, refusing unreadable hashes;
- ``steps``: prepare, finish, fail, re-queue and reject one job, with RQ's own writes;
- ``retrying``: riding out a Redis outage, and when to stop trying (the worker is stopping).

None of it knows ``PoolWorker``: the steps take an RQ ``BaseWorker`` (name, state, counters).
"""
