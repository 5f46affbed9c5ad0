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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from aiohttp import web

from gateway import protocol
from gateway.errors import SyncConflict, Unavailable
from gateway.workers.lock import NoAccountFolder
from gateway.workers.syncsession import rules
from gateway.workers.syncsession.rules import Action, Lease
from gateway.workers.syncsession.store import LeaseStore, TurnstileBusy

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

    @contextlib.contextmanager
    def arrived(self, account: str, method: str, session: str) -> Iterator[None]:
        """From a request's arrival to its answer: if it is a request inside a sync whose
        session holds the account's live lease, it holds the lease in flight (rules.py, `busy`)
        while its body comes in, before `turn()` decides on it. Requests that begin or drop a
        sync hold nothing meanwhile: a drop ends its own session's sync anyway, and a start
        refused because its lease lapsed meanwhile is only asked to sync again."""
        if method not in rules.IN_SYNC:
            yield
            return

        def peek(lease: Lease | None) -> tuple[bool, Lease | None]:
            return lease is not None and lease.session == session and lease.live(
                self._clock()
            ), lease

        with self._store.in_flight(account) if self._store.update(account, peek) else _NOTHING:
            yield

    @contextlib.asynccontextmanager
    async def turn(self, account: str, method: str, session: str) -> AsyncIterator[Turn]:
        if method not in _GUARDED:
            yield Turn()
            return
        if method not in rules.TURNSTILE:
            with self._leased(account, method, session) as turn:
                yield turn
            return
        try:
            shared = method in rules.DROPS_LIVE
            async with self._store.turnstile(account, wait=self._wait, shared=shared):
                with self._leased(account, method, session) as turn:
                    yield turn
        except TurnstileBusy as exc:
            raise SyncConflict(str(exc)) from None

    @contextlib.contextmanager
    def _leased(self, account: str, method: str, session: str) -> Iterator[Turn]:
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
            yield Turn(web.Response(body=body, headers=headers))
            return
        turn = Turn()
        if not settles:
            yield turn
            return
        # The lease holder's request holds the lease while in flight (rules.py), until it is
        # settled: the idle clock starts when it is answered.
        with self._store.in_flight(account) if holder else _NOTHING:
            try:
                yield turn
            finally:

                def settle(lease: Lease | None) -> tuple[None, Lease | None]:
                    now = self._clock()
                    lease = rules.after(lease, method, session, turn.status, now, self._idle)
                    return None, lease

                try:
                    self._store.update(account, settle)
                except NoAccountFolder:
                    pass  # moved away meanwhile: its lease stayed behind with the folder
