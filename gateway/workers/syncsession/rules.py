"""One collection sync per account at a time: the rule, as a pure state machine.

Pure: a `Lease` (the live sync, or None) and one request in, a `Decision` or a new lease out.
Times are Unix seconds (`now`), because the lease crosses gateway processes (store.py).

What the stock server does alone (rslib/src/sync/http_server/user.rs and handlers.rs, and
measured with the 26.9 client and server): it keeps one sync state per account, tagged with the
session id `s` of the `anki-sync` header. `sync/start` replaces any state there; `sync/meta`,
`sync/upload` and `sync/download` drop it; `sync/abort` drops it whatever its session; a request
of a session that is not the live one gets 409 (body "409", which Anki shows as "Only one copy
of Anki can sync to your account at once"). It never expires a state by time. So a second
device's `start` silently takes over a sync half-way, and its `abort` ends the other's sync:
two devices syncing at once lost notes in 6 of 11 runs (docs/operations/data-safety.md).

The gateway's rule, applied before a request reaches the worker:
- requests that begin or drop a sync (`TURNSTILE`) go one at a time, each deciding only once
  the one before it is answered (store.py), so what was decided is what the worker sees;
- a lease names the live session and when it lapses (`expires`); each request of that session
  renews it to `now + idle`, before it is sent and again when it is answered, and holds it
  while it is in flight (`busy`), however long it takes: the idle clock counts from the end
  of the session's last request (a slow phone's long `chunk` or `finish` keeps its sync).
  A renewal that would move `expires` by less than `renewal_step(idle)` (a tenth of `idle`,
  at most 5 s) leaves the lease as it is: the requests of a sync come in quick succession,
  and each renewal is a write of the shared lease file (store.py; about 4 % of the gateway's
  CPU per sync, docs/benchmarks.md). So a silent sync lapses between `idle` minus that step
  and `idle` after its last request;
- `sync/start` of another session, and `sync/meta`, `sync/upload`, `sync/download` of another
  session, while a lease is live: REFUSE (409, the stock answer the client understands);
- a method inside a sync (`applyChanges` … `finish`) of another session: REFUSE, never sent on
  (it could not be served, and must not touch the live sync);
- `sync/abort` of another session: ANSWER_ABORT (200 `null`, the stock answer when nothing is
  live), never sent on: an abort ends only its own sync;
- `sync/start` with no live lease claims one; `sync/finish` and `sync/abort` of the live
  session release it (whatever the answer), and so do a `start` that is refused upstream,
  `sync/meta`, `upload` or `download` of the live session (the stock server dropped its sync)
  and a request of it the worker answers 409 (it holds no such sync): a lease is never renewed
  by requests of a sync the worker no longer has;
- a method inside a sync whose session holds no live lease (the sync was cut: its account
  moved to another node, its worker stopped, or it lapsed): RETRY (503 with Retry-After, "try
  again"), never sent on; an abort of it is answered here;
- a lease not renewed for `idle` seconds, with no request of its session in flight, has
  lapsed (a phone that lost its network): the next device may start. Should the silent
  device come back, its requests are refused (409, or 503 if nobody holds the account): its
  sync fails and it syncs again, nothing else is touched.
- media sync (`msync/*`) passes: the stock server keeps no state between media requests and
  none of them touches the collection sync (handlers.rs), each is its own transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

START = "sync/start"
#: Requests of a running sync, after `start` (anki-sync-protocol.md).
IN_SYNC = frozenset(
    {
        "sync/applyGraves",
        "sync/applyChanges",
        "sync/chunk",
        "sync/applyChunk",
        "sync/sanityCheck2",
        "sync/finish",
        "sync/abort",
    }
)
ENDS = frozenset({"sync/finish", "sync/abort"})
#: Requests that make the stock server drop whatever sync is live (`with_col`, `upload`,
#: `download` abort it first).
DROPS_LIVE = frozenset({"sync/meta", "sync/upload", "sync/download"})
#: Requests that begin or drop a sync: they pass one at a time (store.py, turnstile).
TURNSTILE = DROPS_LIVE | {START}


class Action(enum.Enum):
    PASS = "pass"  # noqa: S105 - an action, not a password
    REFUSE = "refuse"
    ANSWER_ABORT = "answer_abort"
    RETRY = "retry"


@dataclass(frozen=True)
class Lease:
    session: str
    expires: float

    def live(self, now: float) -> bool:
        return now < self.expires


def renewal_step(idle: float) -> float:
    """Seconds: the smallest move of `expires` worth a write (module doc)."""
    return min(5.0, idle / 10)


def renewed(lease: Lease | None, session: str, now: float, idle: float) -> Lease:
    """`session`'s lease renewed to `now + idle`, or `lease` itself when it is that session's
    and already lapses within `renewal_step(idle)` of that (no write)."""
    expires = now + idle
    if (
        lease is not None
        and lease.session == session
        and expires - renewal_step(idle) <= lease.expires <= expires
    ):
        return lease
    return Lease(session, expires)


@dataclass(frozen=True)
class Decision:
    action: Action
    #: The lease to keep from now on (unchanged when the request does not move it).
    lease: Lease | None


def before(
    lease: Lease | None, method: str, session: str, now: float, idle: float, busy: bool = False
) -> Decision:
    """What to do with a request about to go to the account's worker. `busy`: a request of
    the lease's session is in flight (store.py), which holds the lease whatever `expires`."""
    live = lease if lease is not None and (busy or lease.live(now)) else None
    other = live is not None and live.session != session
    if method == START:
        if other:
            return Decision(Action.REFUSE, lease)
        return Decision(Action.PASS, Lease(session, now + idle))
    if method in IN_SYNC:
        if method == "sync/abort" and (live is None or other):
            return Decision(Action.ANSWER_ABORT, lease)
        if other:
            return Decision(Action.REFUSE, lease)
        if live is None:
            # A sync nobody holds: cut (its account moved, its worker stopped) or silent past
            # the limit. The worker would answer 409 if it lost it; the client is told to sync
            # again instead.
            return Decision(Action.RETRY, lease)
        return Decision(Action.PASS, renewed(lease, session, now, idle))
    if method in DROPS_LIVE and other:
        return Decision(Action.REFUSE, lease)
    return Decision(Action.PASS, lease)


def after(
    lease: Lease | None, method: str, session: str, status: int | None, now: float, idle: float
) -> Lease | None:
    """The lease once a passed request is answered (`status` None: no answer)."""
    if lease is None or lease.session != session:
        return lease  # not ours (any more): leave it alone
    if method in ENDS or method in DROPS_LIVE:
        return None  # ended, or dropped upstream (the stock server ends its own sync too)
    if method in IN_SYNC and status == 409:
        return None  # the worker holds no such sync: renewing would hold the account for it
    if method == START and (status is None or not 200 <= status < 300):
        return None
    if method == START or method in IN_SYNC:
        return renewed(lease, session, now, idle)
    return lease
