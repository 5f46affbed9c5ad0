"""Where proxied requests meet a backup: the gateway's side of the handshake (quiesce.py).

    gate = BackupGate(collections_dir, pool); await gate.start() ... await gate.close()
    async with gate.passage(account, "sync/start", session) as passage:
        ...forward...; passage.status = <the answer's status>
        raises Unavailable (503, Retry-After) when the request cannot pass (below)

Every proxied request holds this process's share of the account's busy lock from the moment it
goes to the worker (its body read whole: forwarding/body.py) until its answer is sent; a worker
login likewise; an open collection sync (sessions.py) holds one more until it ends. A body still
arriving holds nothing: no slow client delays a backup that way.
While a backup wants the account (sessions.verdict):
- requests of the sync under way pass, so it ends normally; other requests are HELD (they
  wait, polling every `POLL` s) until the backup is done. A request held for `hold` seconds
  gets 503 with Retry-After: Anki shows "please try again in a few minutes" and keeps the
  user logged in (never 403). `hold` (20 s) stays under Anki's stall timers (30 s at login,
  60 s in a sync: anki-sync-protocol.md), so the client gets the 503, not a timeout of its own.
- The watcher (every `WATCH_PERIOD` s) stops this process's worker for a wanted account as
  soon as no gateway process has a request in flight or a sync open on it (busy lock free), or
  at the backup's `force_at` regardless: then requests in flight on it fail (502, "try again")
  and a sync under way is CUT: its next request gets 503 and the client syncs again from the
  start. So one account holds a backup at most until `force_at`, however its clients behave.

An account's folder is checked (created, resolved inside the collections folder: workers/lock.py
account_dir) once and remembered (`FOLDERS` accounts): a request then costs the busy lock's
open and flock and the want's look, no mkdir or path resolution (with the opens, 7 % of the
gateway's busy time at 16 clients in a profile, issue 18). A folder gone meanwhile (erased,
moved away) is checked, so created, again. The watcher's rounds (every `WATCH_PERIOD` s, over
every running worker's account) use the remembered folders too: before, two path resolutions
per running account and round were 9 % of the gateway's busy time with 24 devices syncing
(issue 18).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache

from gateway.backup import quiesce
from gateway.backup.sessions import IN_SYNC, OpenSyncs, Verdict, verdict
from gateway.errors import Unavailable
from gateway.workers.lock import account_dir, account_path
from gateway.workers.pool import WorkerPool

log = logging.getLogger("gateway.backup")

#: Seconds a request waits for a backup of its account before a 503.
HOLD_SECONDS = 20.0
POLL = 0.1
WATCH_PERIOD = 0.25
RETRY_AFTER = 10
#: Account folders remembered once checked.
FOLDERS = 4096


class Passage:
    """Set `status` to the answer's status once known (None: no answer)."""

    status: int | None = None


class BackupGate:
    def __init__(
        self,
        collections_dir: Path,
        pool: WorkerPool,
        *,
        hold: float | None = None,
        sync_idle_limit: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._dir = collections_dir
        self._pool = pool
        self._hold = HOLD_SECONDS if hold is None else hold
        self._clock = clock
        self._wall = wall
        self._activity = quiesce.Activity()
        self._syncs = OpenSyncs(sync_idle_limit)
        self._watcher: asyncio.Task[None] | None = None
        self._folders: LRUCache[str, Path] = LRUCache(FOLDERS)

    def _folder(self, account: str) -> Path:
        folder = self._folders.get(account)
        if folder is None:
            folder = self._folders[account] = account_dir(self._dir, account)
        return folder

    def _known(self, account: str) -> Path:
        """The account's folder as remembered, else its path, unchecked (gone after a move: no
        want): the watcher's rounds cost no path resolution per running account."""
        return self._folders.get(account) or account_path(self._dir, account)

    def _enter(self, account: str, folder: Path) -> Path:
        """Take this process's share of the account's busy lock; the folder it was taken in."""
        try:
            self._activity.enter(folder)
        except FileNotFoundError:
            self._folders.pop(account, None)
            folder = self._folder(account)
            self._activity.enter(folder)
        return folder

    async def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_forever())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])

    def passage(self, account: str, method: str, session: str) -> _Passing:
        """`async with gate.passage(...) as passage:` past a backup of the account (module
        doc); raises Unavailable (503) when the request cannot pass."""
        return _Passing(self, account, method, session)

    async def _pass(self, account: str, method: str, session: str) -> Path:
        """Wait until the request may pass; the folder whose busy lock it then holds."""
        folder = self._folder(account)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._hold
        held = False
        while True:
            if self._syncs.was_cut(account, method, session):
                raise Unavailable(
                    "this sync was interrupted by a backup; the client syncs again",
                    retry_after=RETRY_AFTER,
                )
            # The share first, then the look (quiesce.py, "Order").
            folder = self._enter(account, folder)
            want = quiesce.wanted(folder)
            found = verdict(
                wanted=want is not None,
                force_at=want.force_at if want is not None else math.inf,
                in_open_sync=method in IN_SYNC
                and self._syncs.is_open(account, session, self._clock()),
                wall=self._wall(),
            )
            if found is Verdict.PASS:
                return folder
            self._activity.leave(folder)
            if found is Verdict.CUT:
                self._cut(account, folder)
                continue
            if not held:
                held = True
                log.info("request held for a backup", extra={"account": account})
            if loop.time() >= deadline:
                raise Unavailable(
                    f"a backup of this account took longer than {self._hold:g} s",
                    retry_after=RETRY_AFTER,
                )
            await asyncio.sleep(POLL)

    def _passed(
        self, account: str, method: str, session: str, folder: Path, status: int | None
    ) -> None:
        """The request that passed is answered (`status`), or failed (None)."""
        opened, closed = self._syncs.answered(account, method, session, status, self._clock())
        if opened:
            self._activity.enter(folder)
        if closed:
            self._activity.leave(folder)
        self._activity.leave(folder)

    def _cut(self, account: str, folder: Path) -> None:
        if self._syncs.cut(account, self._clock()):
            self._activity.leave(folder)
            log.warning("sync under way cut for a backup", extra={"account": account})

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            try:
                self.watch()
            except Exception:
                log.exception("backup watcher failed; retrying")

    def watch(self) -> None:
        """One round: end silent syncs, cut forced ones, stop workers a backup may now have."""
        for account in self._syncs.expired(self._clock()):
            self._activity.leave(self._known(account))
        wall = self._wall()
        for account in self._syncs.accounts():
            folder = self._known(account)
            want = quiesce.wanted(folder)
            if want is not None and wall >= want.force_at:
                self._cut(account, folder)
        for account in self._pool.running():
            folder = self._known(account)
            want = quiesce.wanted(folder)
            if want is None:
                continue
            forced = wall >= want.force_at
            if forced or quiesce.idle_everywhere(folder):
                why = "a backup forces it" if forced else "a backup wants it"
                self._pool.retire(account, why)


class _Passing:
    """`BackupGate.passage()`: a class, not a generator (cheaper on every request, issue 18)."""

    __slots__ = ("_gate", "_account", "_method", "_session", "_folder", "_passage")

    def __init__(self, gate: BackupGate, account: str, method: str, session: str) -> None:
        self._gate = gate
        self._account = account
        self._method = method
        self._session = session
        self._folder: Path | None = None
        self._passage = Passage()

    async def __aenter__(self) -> Passage:
        self._folder = await self._gate._pass(self._account, self._method, self._session)
        return self._passage

    async def __aexit__(self, *exc: object) -> None:
        if self._folder is not None:
            folder, self._folder = self._folder, None
            self._gate._passed(
                self._account, self._method, self._session, folder, self._passage.status
            )
