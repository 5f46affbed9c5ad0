"""Where an account's sync lease lives: one small file in the account folder, shared by every
gateway process on the data folder (and every node on a shared file system).

    store = LeaseStore(collections_dir)
    result = store.update(account, change)   # change(lease | None) -> (result, lease | None)
    store.clear(account)                     # the worker stopped: no lease (creates nothing)

`<collections_dir>/<account>/.gateway-sync-session` holds `{"session": str, "expires": float}`
(Unix seconds) or nothing. `update()` reads it, calls `change`, and writes the new lease back,
all under an exclusive flock of the file (blocking: every holder only reads and writes a few
bytes), so two processes deciding on one account see each other's lease. An unreadable or
foreign file counts as no lease: the worst that can do is let one more sync start, which the
stock server alone would have done anyway.

    with store.in_flight(account): ...      # a request of the lease's session is in flight
    store.busy(account) -> bool             # is one, in any process? (rules.before: `busy`)
    async with store.turnstile(account, wait=20.0): ...   # TurnstileBusy after `wait` seconds

The turnstile (`.gateway-sync-turnstile`, an exclusive flock held for a whole request) lets one
request at a time through of those that begin a sync or drop one (`sync/meta`, `start`,
`upload`, `download`): a lease is only worth something if no such request decided before it
is still on its way to the worker (measured: a second device's `meta`, let through just before
the first device's `start`, reached the worker after it and ended that sync). The stock server
runs one request at a time anyway, so this costs little. Locks belong to open files: two
requests of one process exclude each other as two processes do, and a dead process's locks go
with it. Raises ValueError for an unsafe account name, and `NoAccountFolder` (503) when the
account has no folder on this node (moved away): the lease never creates one
(workers/lock.py: `account_dir`).

`.gateway-sync-in-flight` holds a shared flock for each request of the lease's session while it
is in flight; `busy()` probes it with LOCK_EX|LOCK_NB, under the lease's flock. A lock, not a
count in the lease file: a process that dies mid-request cannot leave the account held.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from gateway.workers.lock import account_dir, account_path, try_flock
from gateway.workers.syncsession.rules import Lease

FILE_NAME = ".gateway-sync-session"
TURNSTILE = ".gateway-sync-turnstile"
IN_FLIGHT = ".gateway-sync-in-flight"
POLL = 0.01
#: The file is a few dozen bytes; more is not ours.
MAX_BYTES = 4096

T = TypeVar("T")


def decode(raw: bytes) -> Lease | None:
    try:
        data = json.loads(raw or b"null")
        session, expires = data["session"], data["expires"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(session, str) or not isinstance(expires, (int, float)):
        return None
    return Lease(session, float(expires))


def encode(lease: Lease | None) -> bytes:
    if lease is None:
        return b""
    return json.dumps({"session": lease.session, "expires": lease.expires}).encode()


class LeaseStore:
    def __init__(self, collections_dir: Path) -> None:
        self._dir = collections_dir

    def update(self, account: str, change: Callable[[Lease | None], tuple[T, Lease | None]]) -> T:
        path = account_dir(self._dir, account) / FILE_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, MAX_BYTES, 0)
            old = decode(raw)
            result, new = change(old)
            if new != old:
                data = encode(new)
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            return result
        finally:
            os.close(fd)  # drops the flock

    def clear(self, account: str) -> None:
        """Forget the account's lease, if its folder has one: its worker stopped, and the sync
        state went with it. Creates nothing (a folder moved away stays away)."""
        path = account_path(self._dir, account) / FILE_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def busy(self, account: str) -> bool:
        """Whether a request of the account's lease holder is in flight (`in_flight`), in any
        process. Call it inside `update()`: the lease's flock keeps two probes apart."""
        fd = try_flock(account_dir(self._dir, account) / IN_FLIGHT)
        if fd is None:
            return True
        os.close(fd)
        return False

    @contextlib.contextmanager
    def in_flight(self, account: str) -> Iterator[None]:
        """Marks a request of the lease holder as in flight (a shared flock) until the block
        ends; a dead process's mark goes with it."""
        fd = os.open(
            account_dir(self._dir, account) / IN_FLIGHT,
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a `busy()` probe holds it
            yield
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def turnstile(self, account: str, *, wait: float) -> AsyncIterator[None]:
        path = account_dir(self._dir, account) / TURNSTILE
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (fd := try_flock(path)) is None:
            if loop.time() >= deadline:
                raise TurnstileBusy(f"another request held the account for {wait:g} s")
            await asyncio.sleep(POLL)
        try:
            yield
        finally:
            os.close(fd)


class TurnstileBusy(Exception):
    """Another request that begins or drops a sync held the account for too long."""
