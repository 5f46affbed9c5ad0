"""Which collection syncs are open, and what a request meets while a backup wants its account.

Pure: times are seconds on a monotonic clock (`now`) except `force_at`, Unix time (`wall`),
because it crosses processes. No I/O.

A collection sync is server-side state in the account's worker from `sync/start` (answered 2xx)
to `sync/finish` or `sync/abort` (anki-sync-protocol.md); stopping the worker in between loses
it. The stock server keeps one per account (another device's `start` replaces it), so
`OpenSyncs` keeps at most one per account, keyed by the `s` of the `anki-sync` header. A sync
whose client went silent for `idle_limit` seconds (Anki's own stall timer is 60 s) is over.
Full uploads/downloads and media sync steps are single requests: being in flight covers them.

`verdict()` while a backup wants the account:
- a request of the open sync (same session, a method inside a sync) passes until `force_at`,
  so a sync under way ends normally; after it, it is CUT: the worker is being stopped, the
  client gets a retryable 503 and syncs again from the start;
- anything else is HELD until the backup is done (bounded by the caller; then a 503).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# One list of a sync's methods, shared with the one-sync-per-account rule.
from gateway.workers.syncsession.rules import ENDS as ENDS_SYNC
from gateway.workers.syncsession.rules import IN_SYNC
from gateway.workers.syncsession.rules import START as STARTS_SYNC


class Verdict(enum.Enum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    HOLD = "hold"
    CUT = "cut"


def verdict(*, wanted: bool, force_at: float, in_open_sync: bool, wall: float) -> Verdict:
    if not wanted:
        return Verdict.PASS
    if in_open_sync:
        return Verdict.PASS if wall < force_at else Verdict.CUT
    return Verdict.HOLD


@dataclass
class _Open:
    session: str
    last_seen: float


class OpenSyncs:
    def __init__(self, idle_limit: float = 60.0) -> None:
        self._idle_limit = idle_limit
        self._open: dict[str, _Open] = {}
        #: Syncs whose worker was stopped under them: their next request must not reach a fresh
        #: worker that never saw their start.
        self._cut: dict[str, _Open] = {}

    def is_open(self, account: str, session: str, now: float) -> bool:
        found = self._open.get(account)
        return (
            found is not None
            and found.session == session
            and now - found.last_seen <= self._idle_limit
        )

    def answered(
        self, account: str, method: str, session: str, status: int | None, now: float
    ) -> tuple[bool, bool]:
        """Record a request's outcome (`status` None: no answer). Returns (opened, closed):
        whether an open sync of the account began or ended with it."""
        found = self._open.get(account)
        closed = False
        if method == STARTS_SYNC and status is not None and 200 <= status < 300:
            if found is not None:
                closed = True  # the stock server dropped the older one
            self._open[account] = _Open(session, now)
            self._cut.pop(account, None)
            return True, closed
        if found is not None and found.session == session and method in IN_SYNC:
            if method in ENDS_SYNC:
                del self._open[account]
                return False, True
            found.last_seen = now
        return False, False

    def cut(self, account: str, now: float) -> bool:
        """The account's open sync loses its worker; True if there was one. Its later requests
        are `was_cut()` until the client starts a new sync (or `idle_limit` passes)."""
        found = self._open.pop(account, None)
        if found is None:
            return False
        self._cut[account] = _Open(found.session, now)
        return True

    def was_cut(self, account: str, method: str, session: str) -> bool:
        found = self._cut.get(account)
        return found is not None and found.session == session and method in IN_SYNC

    def expired(self, now: float) -> list[str]:
        """Forget syncs silent for longer than `idle_limit` (open or cut); returns the accounts
        whose open sync ended so."""
        for account in [a for a, o in self._cut.items() if now - o.last_seen > self._idle_limit]:
            del self._cut[account]
        gone = [a for a, o in self._open.items() if now - o.last_seen > self._idle_limit]
        for account in gone:
            del self._open[account]
        return gone

    def accounts(self) -> list[str]:
        """Accounts with an open sync."""
        return list(self._open)
