"""Why a worker died, from its exit status, its last lines and its cgroup's OOM count."""

from __future__ import annotations

import signal

import pytest

from gateway.containment import classify

RUST_OOM = "memory allocation of 67108864 bytes failed | note: run with `RUST_BACKTRACE=1`"


@pytest.mark.parametrize(
    ("returncode", "tail", "oom_killed", "reason", "says"),
    [
        # Under RLIMIT_DATA the stock server's allocation fails and Rust aborts (measured).
        (-signal.SIGABRT, RUST_OOM, False, "memory", "SIGABRT, an allocation failed"),
        (1, "Traceback ... MemoryError", False, "memory", "exit status 1, an allocation"),
        # The kernel's OOM killer: at the cgroup's memory.max, or the host's.
        (-signal.SIGKILL, "", True, "memory", "SIGKILL, killed at its cgroup memory limit"),
        (-signal.SIGKILL, "", False, "memory", "SIGKILL, most likely the kernel's OOM killer"),
        (-signal.SIGSEGV, "", False, "crash", "SIGSEGV"),
        (-signal.SIGABRT, "thread 'main' panicked at ...", False, "crash", "SIGABRT"),
        (101, "panicked", False, "crash", "exit status 101"),
        (-99, "", False, "crash", "signal 99"),
    ],
)
def test_a_death_is_put_down_to_memory_only_on_evidence(
    returncode, tail, oom_killed, reason, says
) -> None:
    death = classify(returncode, tail, oom_killed)
    assert death.reason == reason
    assert death.detail.startswith(says)
