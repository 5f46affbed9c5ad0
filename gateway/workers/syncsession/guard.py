"""The proxy's side of the one-sync-per-account rule (rules.py), over the shared lease (store.py).

    guard = SessionGuard(collections_dir, idle=60.0)
    async with guard.turn(account, "sync/chunk", session) as turn:
        if turn.answer is not None: return turn.answer      # answered here, never sent on
        ...send to the worker...; turn.status = <the worker's status>
    raises SyncConflict (409) when another device's sync holds the account, Unavailable (503,
    Retry-After) for a request of a sync that was cut (rules.py)

    with guard.arrived(account, "sync/chunk", session): ...   # around the body and the turn
    guard.worker_stopped(account)   # the pool calls it: the sync state died with the worker
    guard.close()                   # the gateway stops: the lease's kept files are closed

Only collection-sync methods touch the lease file; media sync and anything else pass untouched.
Requests that begin or drop a sync (`rules.TURNSTILE`) pass the account's turnstile (store.py,
turnstile.py): those that drop one (`rules.DROPS_LIVE`) together, `sync/start` alone; one that
waits longer than `wait` seconds for its turn is refused like a second device (409).

File work per request (each a few syscalls on the account folder): a drop with no lease of its
own session reads the lease once (the decision) inside the turnstile's shared flock and writes
nothing back; a request of the live sync also holds the in-flight mark from its arrival
(`arrived`) and settles the lease when answered. The in-flight probe (`busy`) runs only for a
lease whose time is up.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from gateway import protocol
from gateway.errors import SyncConflict, Unavailable
from gateway.workers.lock import NoAccountFolder
from gateway.workers.syncsession import rules
from gateway.workers.syncsession.rules import Action, Lease
from gateway.workers.syncsession.store import InFlight, LeaseStore, TurnstileBusy
from gateway.workers.syncsession.turnstile import Passage

log = logging.getLogger("gateway.syncsession")

_GUARDED = rules.IN_SYNC | rules.TURNSTILE
#: Seconds a cut sync's client is told to wait before syncing again.
RETRY_AFTER = 5
#: Seconds a request waits for its turn (under Anki's 60 s stall timer).
WAIT = 20.0
_NOTHING = contextlib.nullcontext()


class Turn:
    """`answer`: the response to give without the worker; set `status` once answered."""

    def __init__(self, answer: web.Response | None = None) -> None:
        self.answer = answer
        self.status: int | None = None


class SessionGuard:
    def __init__(
        self,
        collections_dir: Path,
        *,
        idle: float,
        wait: float = WAIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = LeaseStore(collections_dir)
        self._idle = idle
        self._wait = wait
        self._clock = clock

    def worker_stopped(self, account: str) -> None:
        """The account's worker stopped (a backup, a crash, its memory limit, eviction, idle):
        the stock server's sync state went with it, so the lease goes too. The cut sync's next
        request then gets 503 (`rules.before`: RETRY), and another device may start at once
        instead of meeting 409 until the lease lapses. Never raises: a lease left behind only
        lapses by itself."""
        self._store.forget(account)
        try:
            self._store.clear(account)
        except (OSError, ValueError):
            log.exception("could not drop the sync lease of a stopped worker")

    def close(self) -> None:
        self._store.close()

    def arrived(
        self, account: str, method: str, session: str
    ) -> contextlib.AbstractContextManager[None]:
        """From a request's arrival to its answer: if it is a request inside a sync whose
        session holds the account's live lease, it holds the lease in flight (rules.py, `busy`)
        while its body comes in, before `turn()` decides on it. Requests that begin or drop a
        sync hold nothing meanwhile: a drop ends its own session's sync anyway, and a start
        refused because its lease lapsed meanwhile is only asked to sync again. The lease is
        read when this is called (call it in the `with` statement)."""
        if method not in rules.IN_SYNC:
            return _NOTHING

        def peek(lease: Lease | None) -> tuple[bool, Lease | None]:
            return lease is not None and lease.session == session and lease.live(
                self._clock()
            ), lease

        return self._store.in_flight(account) if self._store.update(account, peek) else _NOTHING

    def turn(self, account: str, method: str, session: str) -> _Turning:
        """`async with guard.turn(...) as turn:` module doc."""
        return _Turning(self, account, method, session)

    def _decide(self, account: str, method: str, session: str) -> tuple[Turn, bool, bool]:
        """The turn of a guarded request, whether it holds the lease (in flight until settled)
        and whether it settles the lease when answered; raises SyncConflict or Unavailable."""

        def decide(lease: Lease | None) -> tuple[tuple[Action, bool, bool], Lease | None]:
            now = self._clock()
            # The in-flight probe matters only for a lease whose time is up (rules.before).
            busy = lease is not None and not lease.live(now) and self._store.busy(account)
            found = rules.before(lease, method, session, now, self._idle, busy)
            kept = found.lease
            if found.action is Action.PASS and method in rules.ENDS:
                # finish and abort end the sync whatever the worker answers (rules.after): the
                # lease goes now, not once the client has read the answer, or a device starting
                # right after it could meet a lease about to go (409). The worker takes a later
                # start only once this one is applied (the stock server's per-user lock).
                lease = rules.after(kept, method, session, None, now, 0.0)
                return (found.action, False, False), lease
            holder = kept is not None and kept.session == session and kept.live(now)
            # A drop whose session holds no lease leaves the lease as it is when answered
            # (rules.after), and none can become its session's meanwhile: a start waits for
            # it at the turnstile. No settling then.
            ours = kept is not None and kept.session == session
            settles = method not in rules.DROPS_LIVE or ours
            return (found.action, holder, settles), found.lease

        action, holder, settles = self._store.update(account, decide)
        if action is Action.REFUSE:
            log.info("sync refused: another device is syncing", extra={"method": method})
            raise SyncConflict(f"{method} while another sync of the account is live")
        if action is Action.RETRY:
            raise Unavailable(
                f"{method} of a sync that was cut; the client syncs again",
                retry_after=RETRY_AFTER,
            )
        if action is Action.ANSWER_ABORT:
            # The stock answer to an abort with nothing live: 200 and JSON null.
            body, headers = protocol.encode_answer(None)
            return Turn(web.Response(body=body, headers=headers)), False, False
        return Turn(), holder, settles

    def _settle(self, account: str, method: str, session: str, status: int | None) -> None:
        def settle(lease: Lease | None) -> tuple[None, Lease | None]:
            now = self._clock()
            lease = rules.after(lease, method, session, status, now, self._idle)
            return None, lease

        try:
            self._store.update(account, settle)
        except NoAccountFolder:
            pass  # moved away meanwhile: its lease stayed behind with the folder


class _Turning:
    """`SessionGuard.turn()`: a class, not nested generators (issue 18). In order: the
    account's turnstile (requests that begin or drop a sync), the decision, the in-flight mark
    of the lease holder; when the block ends, the lease settled (the idle clock starts when the
    request is answered), then the mark and the turnstile let go."""

    __slots__ = ("_guard", "_account", "_method", "_session", "_passage", "_turn", "_hold")

    def __init__(self, guard: SessionGuard, account: str, method: str, session: str) -> None:
        self._guard = guard
        self._account = account
        self._method = method
        self._session = session
        self._passage: Passage | None = None
        self._turn: Turn | None = None  # set when the lease settles at the end
        self._hold: InFlight | None = None

    async def __aenter__(self) -> Turn:
        method = self._method
        if method not in _GUARDED:
            return Turn()
        guard = self._guard
        if method in rules.TURNSTILE:
            passage = guard._store.turnstile(
                self._account, wait=guard._wait, shared=method in rules.DROPS_LIVE
            )
            try:
                await passage.__aenter__()
            except TurnstileBusy as exc:
                raise SyncConflict(str(exc)) from None
            self._passage = passage
        try:
            turn, holder, settles = guard._decide(self._account, method, self._session)
            if settles:
                if holder:
                    hold = guard._store.in_flight(self._account)
                    hold.enter()
                    self._hold = hold
                self._turn = turn
        except BaseException:
            await self._let_go()
            raise
        return turn

    async def __aexit__(self, *exc: object) -> None:
        try:
            turn, self._turn = self._turn, None
            if turn is not None:
                try:
                    self._guard._settle(self._account, self._method, self._session, turn.status)
                finally:
                    hold, self._hold = self._hold, None
                    if hold is not None:
                        hold.leave()
        finally:
            await self._let_go()

    async def _let_go(self) -> None:
        passage, self._passage = self._passage, None
        if passage is not None:
            await passage.__aexit__(None, None, None)
