"""Per-process limits (setrlimit) for a worker, where the gateway cannot create cgroups: the
shipped image run as uid 10001 without delegation, a hybrid cgroup host, a developer's machine.

Set in the child between fork and exec, so they bind the stock server from its first
instruction and are inherited by anything it starts:

- RLIMIT_DATA = `workers.max_memory_megs`: the private writable memory (heap, anonymous
  mappings, thread stacks) the kernel lets it map (Linux >= 4.7). An allocation past it fails;
  the stock server (Rust) then aborts ("memory allocation of N bytes failed", SIGABRT), so the
  worker dies alone and the gateway sees why. Not RLIMIT_AS: address space that is reserved but
  never used (glibc arenas, guard pages, the 8 MiB a thread stack reserves) counts there and
  would kill honest workers long before they use that much memory.
- Threads and processes: every thread's stack counts against RLIMIT_DATA (measured: 20 Python
  threads raise VmData by 160 MiB), so the memory limit bounds them per worker too. Not
  RLIMIT_NPROC: it counts every task of the *user*, gateway and all workers together (and is
  not enforced for root), so it cannot bound one worker without letting its neighbours starve
  it of threads.
- RLIMIT_CORE = 0: a crashing worker leaves no core file holding an account's collection.
- CPU share: nice `workers.nice` (an unprivileged process cannot lower it again), so busy
  workers yield to the gateway's event loop. Not RLIMIT_CPU: that is a total of CPU seconds,
  which kills a long-lived honest worker, not a share.
"""

from __future__ import annotations

import os
import resource

from gateway.containment import Death, Limits, classify


def _within_hard(which: int, value: int) -> int:
    hard = resource.getrlimit(which)[1]
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


class RlimitBox:
    def __init__(self, limits: Limits) -> None:
        # Computed before the fork: the child only makes system calls. Never above a hard limit
        # the gateway itself already has (raising it would fail, and the worker with it).
        self._settings = tuple(
            (which, _within_hard(which, value))
            for which, value in (
                (resource.RLIMIT_DATA, limits.memory_bytes),
                (resource.RLIMIT_CORE, 0),
            )
        )
        self._nice = limits.nice

    def enter(self) -> None:
        for which, value in self._settings:
            resource.setrlimit(which, (value, value))
        if self._nice:
            os.nice(self._nice)

    def death(self, returncode: int | None, tail: str) -> Death:
        return classify(returncode, tail)

    def remove(self) -> None:
        return None


class RlimitContainment:
    mode = "rlimit"

    def __init__(self, limits: Limits, reason: str) -> None:
        self.limits = limits
        self.reason = reason

    def box(self, account: str) -> RlimitBox:
        return RlimitBox(self.limits)
