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
    async with store.turnstile(account, wait=20.0, shared=True): ...   # turnstile.py
    store.forget(account)                   # the worker stopped: check the folder afresh
    store.close()                           # the gateway stops: close the files kept open

The turnstile (`.gateway-sync-turnstile`, turnstile.py) is held for a whole request by those
that begin a sync or drop one: `sync/meta`, `upload` and `download` together (`shared`),
`start` alone. A lease is only worth something if no drop decided before it is still on its
way to the worker (measured: a second device's `meta`, let through just before the first
device's `start`, reached the worker after it and ended that sync). Raises ValueError for an
unsafe account name, and `NoAccountFolder` (503) when the account has no folder on this node
(moved away): the lease never creates one (workers/lock.py: `account_dir`). The folder is
checked in full (`account_dir`: name, symlinks, resolution) the first time a store meets the
account, and then only by the files' own opens, which never create a folder (ENOENT: moved
away, 503) until `forget()`: the gateway never puts a symlink in the collections folder, so a
path once checked stays good while the folder is there.

`.gateway-sync-in-flight` holds a shared flock for each request of the lease's session while it
is in flight; `busy()` probes it with LOCK_EX|LOCK_NB, under the lease's flock. A lock, not a
count in the lease file: a process that dies mid-request cannot leave the account held.
Locks belong to open files: two stores exclude each other as two processes do, and a dead
process's locks go with it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway.protocol import MAX_SYNC_HEADER
from gateway.workers.lock import (
    NoAccountFolder,
    account_dir,
    account_path,
    try_flock,
    write_over,
)
from gateway.workers.syncsession.openfiles import Kept, OpenFiles, open_file
from gateway.workers.syncsession.rules import Lease
from gateway.workers.syncsession.turnstile import Passage, Turnstile, TurnstileBusy

__all__ = ["LeaseStore", "TurnstileBusy"]

FILE_NAME = ".gateway-sync-session"
TURNSTILE = ".gateway-sync-turnstile"
IN_FLIGHT = ".gateway-sync-in-flight"
#: Accounts whose folder check a store remembers (a process that only forwards to another
#: process's workers never hears that they stopped).
MOST_CHECKED = 4096
#: The file is a few dozen bytes; more is not ours. The session comes from the anki-sync
#: header (at most `MAX_SYNC_HEADER` characters), and JSON escapes each character to at most
#: 12 bytes (an astral one as two `\uXXXX`): a lease cut short would read as none.
MAX_BYTES = 12 * MAX_SYNC_HEADER + 256

T = TypeVar("T")


@functools.lru_cache(maxsize=1024)
def decode(raw: bytes) -> Lease | None:
    """The lease the file's bytes hold; None for none or for anything unreadable. Cached: the
    file holds the same few dozen bytes for most of a sync (rules.renewal_step), and a `Lease`
    is immutable."""
    if not raw:
        return None  # no lease: the usual case, without a JSON parse
    try:
        data = json.loads(raw)
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
        self._checked: dict[str, str] = {}  # account -> its folder, as a str (no Path per call)
        self._files = OpenFiles()
        self._turnstile = Turnstile()

    def _file(self, account: str, name: str) -> str:
        """`<account folder>/<name>`; the folder checked in full once (module doc)."""
        folder = self._checked.get(account)
        if folder is None:
            if len(self._checked) >= MOST_CHECKED:
                self._checked.clear()  # checked again when next met: bounded memory
            folder = self._checked[account] = str(account_dir(self._dir, account))
        return f"{folder}/{name}"

    def _open(self, account: str, name: str) -> int:
        try:
            return open_file(self._file(account, name))
        except FileNotFoundError:
            raise self._gone(account) from None

    def _take(self, account: str, name: str) -> Kept:
        """The file's kept descriptor (openfiles.py); give it back to `_files`."""
        try:
            return self._files.take(self._file(account, name))
        except FileNotFoundError:
            raise self._gone(account) from None

    def _gone(self, account: str) -> NoAccountFolder:
        self.forget(account)
        return NoAccountFolder(f"no folder for {account} on this node", retry_after=1)

    def forget(self, account: str) -> None:
        """Check the account's folder in full again next time (its worker stopped: a move,
        a restore or a deletion may follow), and close its kept files."""
        folder = self._checked.pop(account, None)
        if folder is not None:
            self._files.drop(folder)

    def close(self) -> None:
        self._files.close()

    def update(self, account: str, change: Callable[[Lease | None], tuple[T, Lease | None]]) -> T:
        kept = self._take(account, FILE_NAME)
        fd = kept.fd
        try:
            # The kept descriptor is shared within the process: this never awaits, so no
            # other update of this process runs meanwhile; the flock keeps processes apart.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, MAX_BYTES, 0)
                old = decode(raw)
                result, new = change(old)
                if new != old:
                    write_over(fd, encode(new))
                return result
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._files.give(kept)

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
        try:
            fd = try_flock(self._file(account, IN_FLIGHT))
        except FileNotFoundError:
            raise self._gone(account) from None
        if fd is None:
            return True
        os.close(fd)
        return False

    def in_flight(self, account: str) -> InFlight:
        """Marks a request of the lease holder as in flight (a shared flock) from `enter()`
        (or the `with` block's start) until `leave()` (its end); a dead process's mark goes
        with it."""
        return InFlight(self, account)

    def turnstile(self, account: str, *, wait: float, shared: bool = False) -> Passage:
        """The account's turnstile (turnstile.py): `shared` for requests that drop a sync,
        exclusive for `start`; TurnstileBusy after `wait` seconds."""
        return self._turnstile.passage(
            account, _TurnstileFile(self, account), shared=shared, wait=wait
        )


class _TurnstileFile:
    """The account's turnstile file, as turnstile.py takes and gives it back."""

    __slots__ = ("_account", "_store")

    def __init__(self, store: LeaseStore, account: str) -> None:
        self._store, self._account = store, account

    def take(self) -> Kept:
        return self._store._take(self._account, TURNSTILE)

    def give(self, kept: Kept) -> None:
        self._store._files.give(kept)


class InFlight:
    """`LeaseStore.in_flight()`: a class, not a generator (issue 18)."""

    __slots__ = ("_store", "_account", "_fd")

    def __init__(self, store: LeaseStore, account: str) -> None:
        self._store, self._account = store, account
        self._fd: int | None = None

    def enter(self) -> None:
        fd = self._store._open(self._account, IN_FLIGHT)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a `busy()` probe holds it
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def leave(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: object) -> None:
        self.leave()
