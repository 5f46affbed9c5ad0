"""What containment is made of: the bounds (`Limits`), why a worker died (`Death`, `classify`),
and the two interfaces every mode implements (`Containment` makes one `Box` per worker).
Pure: no I/O here; cgroups.py and rlimits.py are the two modes, opening.py chooses one. The
contract of the whole is the package docstring (gateway/workers/containment/__init__.py).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config import WorkersConfig

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
