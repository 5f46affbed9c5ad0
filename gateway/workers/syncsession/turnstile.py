"""The per-account turnstile: requests that drop a sync pass together, a `start` alone.

    turnstile = Turnstile()
    async with turnstile.passage(account, file, shared=True, wait=20.0): ...   # meta, ...
    async with turnstile.passage(account, file, shared=False, wait=20.0): ...  # start
    raises TurnstileBusy when the passage is not free within `wait` seconds

`file` takes and gives back the account's `.gateway-sync-turnstile` file (store.py: a kept
descriptor, openfiles.py; whatever taking it raises passes through). A reader-writer lock
over every gateway process on the data folder, held from before a request is decided until it
is answered:

- the guarantee (rules.py): a drop (`sync/meta`, `upload`, `download`) decided before a
  `start` is answered before that start is decided, so it cannot reach the worker after the
  start claimed the account and end its sync; and no drop is decided while a start is on its
  way (the lease it claimed then refuses another session's drop). Drops among themselves need
  no order: each ends whatever sync is live, which the stock server does in any order, and
  one of another session is refused while a lease is live;
- across processes: `flock(LOCK_SH)` for drops, `LOCK_EX` for a start, tried without blocking
  and retried with a short backoff (from `BACKOFF[0]` doubling up to `BACKOFF[1]` seconds).
  The drops of one process share the one open file (one flock for all of them: they exclude
  nobody of their own kind); a start uses it too, once they have all left (flock locks belong
  to the open file, so the in-process lock below is what keeps them apart here);
- within a process: an asyncio reader-writer lock per account in front of the flock, so a
  waiter sleeps until the holder leaves instead of polling. A drop that finds no drop of this
  process taking the flock tries it at once, without the lock (the usual `sync/meta`). A
  start that waits goes before drops that arrive after it (no starvation by a stream of
  `sync/meta` in this process); against other processes' drops it only retries (flock has no
  queue), and gives up after `wait` like any other waiter.

Pure bookkeeping apart from the flock calls; one event loop per instance (the gateway's).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Callable
from typing import Protocol

from gateway.workers.syncsession.openfiles import Kept

#: Seconds between two tries of a flock another process holds: first, most.
BACKOFF = (0.001, 0.02)


class File(Protocol):
    """The account's turnstile file (store.py)."""

    def take(self) -> Kept: ...

    def give(self, kept: Kept) -> None: ...


class TurnstileBusy(Exception):
    """Another request that begins or drops a sync held the account for too long."""


class _Gate:
    """One account's turnstile in this process."""

    __slots__ = (
        "readers",
        "writer",
        "writers_waiting",
        "shared",
        "holding",
        "opening",
        "waiters",
        "pending",
    )

    def __init__(self) -> None:
        self.readers = 0  # drops admitted here (waiting for, or holding, the shared flock)
        self.writer = False  # a start admitted here
        self.writers_waiting = 0
        self.shared: Kept | None = None  # the drops' one flock (LOCK_SH) while `holding`
        self.holding = 0
        self.opening: asyncio.Lock | None = None  # one drop at a time takes the shared flock
        self.waiters: list[asyncio.Future[None]] = []
        # Requests in `_until`, woken or not: `wake()` empties `waiters` before they run again,
        # and a gate dropped meanwhile would leave them on a gate of their own (another gate's
        # start converts their flock on the one open file, one's unlock frees the other's).
        self.pending = 0

    def idle(self) -> bool:
        return not (
            self.readers or self.writer or self.writers_waiting or self.waiters or self.pending
        )

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class Turnstile:
    def __init__(self) -> None:
        self._gates: dict[str, _Gate] = {}

    def passage(self, account: str, file: File, *, shared: bool, wait: float) -> Passage:
        """`async with turnstile.passage(...)`: module doc."""
        return Passage(self, account, file, shared, wait)

    def _gate(self, account: str) -> _Gate:
        gate = self._gates.get(account)
        if gate is None:
            gate = self._gates[account] = _Gate()
        return gate

    def _done(self, account: str, gate: _Gate) -> None:
        if gate.idle() and self._gates.get(account) is gate:
            del self._gates[account]

    async def _enter_shared(self, gate: _Gate, file: File, deadline: float) -> None:
        if gate.writer or gate.writers_waiting:
            await self._until(gate, lambda: not gate.writer and not gate.writers_waiting, deadline)
        gate.readers += 1
        try:
            if gate.shared is None and (gate.opening is None or not gate.opening.locked()):
                # Nobody of this process is taking the flock: try it at once, without the
                # lock or a task (the usual case: no other process holds it exclusively).
                gate.shared = _try_flock(file, fcntl.LOCK_SH)
            if gate.shared is None:
                if gate.opening is None:
                    gate.opening = asyncio.Lock()
                await _acquire(gate.opening, deadline)
                try:
                    if gate.shared is None:
                        gate.shared = await _flock(file, fcntl.LOCK_SH, deadline)
                finally:
                    gate.opening.release()
            gate.holding += 1
        except BaseException:
            gate.readers -= 1
            gate.wake()
            raise

    @staticmethod
    def _leave_shared(gate: _Gate, file: File) -> None:
        try:
            gate.holding -= 1
            if not gate.holding:
                kept, gate.shared = gate.shared, None
                if kept is not None:
                    _unlock(file, kept)
        finally:
            gate.readers -= 1
            gate.wake()

    async def _enter_exclusive(self, gate: _Gate, file: File, deadline: float) -> Kept:
        gate.writers_waiting += 1
        try:
            await self._until(gate, lambda: not gate.writer and not gate.readers, deadline)
        finally:
            gate.writers_waiting -= 1
            gate.wake()  # drops held back for it check again (it may have given up)
        gate.writer = True
        try:
            return await _flock(file, fcntl.LOCK_EX, deadline)
        except BaseException:
            gate.writer = False
            gate.wake()
            raise

    @staticmethod
    def _leave_exclusive(gate: _Gate, file: File, kept: Kept) -> None:
        try:
            _unlock(file, kept)
        finally:
            gate.writer = False
            gate.wake()

    @staticmethod
    async def _until(gate: _Gate, ready: Callable[[], bool], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        gate.pending += 1
        try:
            while not ready():
                waiter = loop.create_future()
                gate.waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    with contextlib.suppress(ValueError):
                        gate.waiters.remove(waiter)
                    raise _Late from None
        finally:
            gate.pending -= 1


class Passage:
    """One request's passage (`Turnstile.passage`): a class, not nested generators (four
    fewer objects on every `sync/meta`, issue 18)."""

    __slots__ = ("_turnstile", "_account", "_file", "_shared", "_wait", "_gate", "_kept")

    def __init__(
        self, turnstile: Turnstile, account: str, file: File, shared: bool, wait: float
    ) -> None:
        self._turnstile = turnstile
        self._account = account
        self._file = file
        self._shared = shared
        self._wait = wait
        self._gate: _Gate | None = None
        self._kept: Kept | None = None

    async def __aenter__(self) -> None:
        turnstile = self._turnstile
        deadline = asyncio.get_running_loop().time() + self._wait
        gate = turnstile._gate(self._account)
        try:
            if self._shared:
                await turnstile._enter_shared(gate, self._file, deadline)
            else:
                self._kept = await turnstile._enter_exclusive(gate, self._file, deadline)
        except BaseException as exc:
            turnstile._done(self._account, gate)
            if isinstance(exc, _Late):
                raise TurnstileBusy(
                    f"another request held the account for {self._wait:g} s"
                ) from None
            raise
        self._gate = gate

    async def __aexit__(self, *exc: object) -> None:
        gate, self._gate = self._gate, None
        if gate is None:
            return
        try:
            if self._shared:
                Turnstile._leave_shared(gate, self._file)
            else:
                assert self._kept is not None
                Turnstile._leave_exclusive(gate, self._file, self._kept)
        finally:
            self._turnstile._done(self._account, gate)


async def _acquire(lock: asyncio.Lock, deadline: float) -> None:
    """`lock`, taken before `deadline` (loop time), else `_Late`."""
    if lock.locked():
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(lock.acquire(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise _Late from None
    else:
        await lock.acquire()  # free: taken at once, no task for the timeout


def _try_flock(file: File, how: int) -> Kept | None:
    """The file, taken, holding flock `how`; None (given back) if another process holds it."""
    kept = file.take()
    try:
        fcntl.flock(kept.fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        file.give(kept)
        return None
    except BaseException:
        file.give(kept)
        raise
    return kept


async def _flock(file: File, how: int, deadline: float) -> Kept:
    """The file, taken, holding flock `how`, tried until `deadline` (loop time)."""
    kept = file.take()
    loop = asyncio.get_running_loop()
    pause = BACKOFF[0]
    try:
        while True:
            try:
                fcntl.flock(kept.fd, how | fcntl.LOCK_NB)
                return kept
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise _Late from None
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, BACKOFF[1])
    except BaseException:
        file.give(kept)
        raise


def _unlock(file: File, kept: Kept) -> None:
    try:
        fcntl.flock(kept.fd, fcntl.LOCK_UN)
    finally:
        file.give(kept)


class _Late(Exception):
    """The deadline passed while waiting (never leaves this module)."""
