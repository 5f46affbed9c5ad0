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

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config import WorkersConfig

log = logging.getLogger("gateway.containment")

MIB = 1024 * 1024


class ContainmentUnavailable(Exception):
    """The configured containment mode cannot work on this host (the message says why)."""


@dataclass(frozen=True)
class Limits:
    #: Memory one worker may use, in bytes (cgroup `memory.max`; RLIMIT_DATA).
    memory_bytes: int
    #: Tasks (processes and threads) one worker may have (cgroup `pids.max`).
    pids: int
    #: The worker's cgroup `cpu.weight` (1-10000) among the workers.
    cpu_weight: int
    #: The worker's nice value in rlimit mode (0-19): its CPU share against the gateway.
    nice: int

    @classmethod
    def from_config(cls, workers: WorkersConfig) -> Limits:
        return cls(
            memory_bytes=workers.max_memory_megs * MIB,
            pids=workers.max_pids,
            cpu_weight=workers.cpu_weight,
            nice=workers.nice,
        )


@dataclass(frozen=True)
class Death:
    """Why a worker exited when nobody asked it to."""

    #: "memory": it hit its memory limit (or the host's OOM killer took it); "crash": anything
    #: else.
    reason: str
    #: For the log: the signal or exit status, and what gave the reason away.
    detail: str


# Rust's allocation failure handler prints this, then aborts (std::alloc::handle_alloc_error).
_RUST_OOM = "memory allocation of"


def classify(returncode: int | None, tail: str, oom_killed: bool = False) -> Death:
    """Why a worker died, from its exit status, its last output lines and (cgroup mode) whether
    the kernel killed it for its memory limit. Pure."""
    if returncode is not None and returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    if oom_killed:
        return Death("memory", f"{how}, killed at its cgroup memory limit")
    if returncode == -signal.SIGKILL:
        # Nobody else sends workers SIGKILL unasked: the kernel's OOM killer does.
        return Death("memory", f"{how}, most likely the kernel's OOM killer")
    if _RUST_OOM in tail or "MemoryError" in tail:
        return Death("memory", f"{how}, an allocation failed at its memory limit")
    return Death("crash", how)


class Box(Protocol):
    def enter(self) -> None: ...
    def death(self, returncode: int | None, tail: str) -> Death: ...
    def remove(self) -> None: ...


class Containment(Protocol):
    mode: str
    reason: str
    limits: Limits

    def box(self, account: str) -> Box: ...


def open_containment(limits: Limits, mode: str = "auto", cgroup_dir: str = "") -> Containment:
    """The containment in force (module doc); logs which one, and why, at INFO."""
    from gateway.containment import cgroups, rlimits

    chosen: Containment
    if mode == "rlimit":
        chosen = rlimits.RlimitContainment(limits, "configured (workers.containment: rlimit)")
    else:
        found = cgroups.find(Path(cgroup_dir) if cgroup_dir else None)
        if isinstance(found, Path):
            chosen = cgroups.CgroupContainment.set_up(found, limits)
        elif mode == "cgroup":
            raise ContainmentUnavailable(f"workers.containment is cgroup, but {found}")
        else:
            chosen = rlimits.RlimitContainment(limits, found)
    log.info(
        "worker containment",
        extra={
            "mode": chosen.mode,
            "reason": chosen.reason,
            "memory_megs": limits.memory_bytes // MIB,
            "pids": limits.pids,
            "cpu_weight": limits.cpu_weight,
            "nice": limits.nice,
        },
    )
    return chosen
