"""Containment: every worker (one account's stock sync server) runs in its own resource box.

The gateway cannot predict from outside everything a stock server will do with a body (issue
16), so the floor under every other rule is a box per worker that it cannot leave: a memory
limit, a bound on its threads and processes, and a CPU share. A worker that hits its memory
limit dies alone; the pool finds out why it died (`Death`) and starts a fresh one.

    Limits.from_config(workers)          the bounds, from `workers.*` (bytes, tasks, weights)
    open_containment(limits, mode, cgroup_dir) -> Containment
        mode "auto": cgroup v2 when the gateway can create cgroups with the memory, pids and cpu
        controllers (a delegated subtree, a container with its own writable cgroup), else
        per-process limits (rlimits.py). "cgroup": that or `ContainmentUnavailable`.
        "rlimit": per-process limits even where cgroups would work.
    Containment.mode                     "cgroup" or "rlimit"; `.reason`: why (start-up log)
    Containment.box(account) -> Box      one worker's box, made before the worker is spawned
    Box.enter()                          runs in the child between fork and exec: os-level
                                         calls only (no locks, no logging)
    Box.death(returncode, tail) -> Death why an unexpected exit happened
    Box.remove()                         after the process is reaped

Errors: `ContainmentUnavailable` (mode "cgroup" where no usable cgroup exists), raised at
start-up with the reason; `OSError` from `box()` when a cgroup cannot be made (the worker is
then not started: never a worker outside its box).
"""

from gateway.workers.containment.box import (
    MIB,
    Box,
    Containment,
    ContainmentUnavailable,
    Death,
    Limits,
    classify,
)
from gateway.workers.containment.opening import open_containment

__all__ = [
    "MIB",
    "Box",
    "Containment",
    "ContainmentUnavailable",
    "Death",
    "Limits",
    "classify",
    "open_containment",
]
