"""The pool's bookkeeping, without processes: who is busy, who is idle, whom to stop.

Pure: every decision takes the records and `now` (from the pool's injected clock) and returns
an answer; nothing here sleeps, spawns or signals. The pool (pool.py) owns one `Usage` per
account with a worker (starting or running) and applies the answers.

- A record is *busy* while at least one lease is in flight, *starting* until its worker is ready.
- Only ready, not busy records are *idle*: a starting worker is never evicted or reaped (its
  waiting leases would fail for no reason).
- Eviction takes the least recently used idle record; reaping takes every idle record unused for
  longer than the idle timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The reaper's period never exceeds this: an idle timeout of an hour still frees memory promptly,
#: and a worker left with an older key generation (signed out elsewhere) goes within it.
MAX_REAP_PERIOD = 10.0


@dataclass(eq=False)
class Usage:
    """One account's worker as the bookkeeping sees it (identity matters: a replaced worker gets a
    new record, so a late lease exit cannot touch its successor)."""

    account: str
    last_used: float
    in_flight: int = 0
    ready: bool = False

    def begin(self, now: float) -> None:
        self.in_flight += 1
        self.last_used = now

    def end(self, now: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.last_used = now

    @property
    def idle(self) -> bool:
        return self.ready and self.in_flight == 0


def least_recently_used_idle(records: Iterable[Usage]) -> Usage | None:
    """The eviction victim when the pool is full, or None when every worker is busy/starting."""
    idle = [r for r in records if r.idle]
    return min(idle, key=lambda r: r.last_used) if idle else None


def idle_past(records: Iterable[Usage], now: float, idle_timeout: float) -> list[Usage]:
    """Records the reaper stops: idle, and unused for longer than `idle_timeout`."""
    return [r for r in records if r.idle and now - r.last_used > idle_timeout]


def reap_period(idle_timeout: float) -> float:
    # Half the timeout: a worker lives at most 1.5 x idle_timeout after its last use.
    return min(idle_timeout / 2, MAX_REAP_PERIOD)


def counts(records: Iterable[Usage]) -> dict[str, int]:
    """`live` counts every record (starting ones hold a slot too), `busy` those with a lease in
    flight, `starting` those not ready yet."""
    live = busy = starting = 0
    for r in records:
        live += 1
        busy += r.in_flight > 0
        starting += not r.ready
    return {"live": live, "busy": busy, "starting": starting}
