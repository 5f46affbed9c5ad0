"""The handshake between a backup and every gateway process serving an account, through flock.

    hold(collections_dir, account, wait) -> Held | str      (backup side; Held is a context
        manager with .folder; a str says why the account could not be quiesced)
    wanted(folder) -> Want | None, idle_everywhere(folder) -> bool, Activity   (gateway side)

Why a handshake (measured with the 26.9 stock server): a running sync server keeps the account's
`media.db` open from its start and, after its first normal sync, `collection.anki2` too, both in
SQLite's exclusive locking mode; nothing else can read them until the server exits (a reader
gets "database is locked" for ever). The server closes the collection only after a full
upload/download. So a consistent copy needs the account's server stopped while no request is in
flight and no collection sync (`sync/start` ... `sync/finish`|`sync/abort`, server-side state in
the worker) is open, and no new one starting until the copy is done.

Two files in the account's folder, both flock()ed (workers/lock.py says why flock: per open
file, so it holds across processes and threads alike, and the kernel drops it when its holder
dies, even by SIGKILL; a killed backup or gateway never leaves an account held):

- `.gateway-backup.lock`: a backup holds it LOCK_EX while it wants the account (`post()`), with
  `{"pid", "force_at"}` (Unix time) written in it. Gateways test it (`wanted()`) with
  LOCK_SH|LOCK_NB: refused means a backup wants the account. Two backups never want one account
  at once (the second gets None and reports the account as not backed up).
- `.gateway-busy.lock`: a gateway process holds LOCK_SH on it while it has a request in flight or
  a collection sync open on the account (`Activity`). `idle_everywhere()` takes LOCK_EX|LOCK_NB
  for an instant: granted proves no process has either.

Order, so neither side can miss the other: a gateway takes its share of the busy lock, *then*
looks for a backup's want (and lets go if it must hold the request); a backup posts its want,
*then* the account's sync server is stopped once the busy lock is free (gate.py). The backup
copies only while it holds the account's worker lock (workers/lock.py), so no server runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.workers.lock import (
    AccountLock,
    NoAccountFolder,
    account_dir,
    try_flock,
    try_lock,
    write_over,
)

#: Seconds past `wait` a backup allows a forced sync server to stop (SIGINT, then SIGKILL after
#: workers/process.STOP_GRACE) and the gateway's watcher to notice (gate.WATCH_PERIOD).
STOP_MARGIN = 15.0
POLL = 0.05

BACKUP_LOCK = ".gateway-backup.lock"
BUSY_LOCK = ".gateway-busy.lock"

_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True)
class Want:
    """A backup wants the account: after `force_at` (Unix time) its server is stopped even with
    requests in flight or a sync open."""

    pid: int
    force_at: float


class Posted:
    """A backup's held want for one account; `release()` (or leaving the block) withdraws it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # drops the flock

    def __enter__(self) -> Posted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def post(folder: Path, force_at: float) -> Posted | None:
    """Want the account in `folder` (its folder, from workers.lock.account_dir); None when
    another backup already wants it. OSError when the folder is not writable."""
    fd = try_flock(folder / BACKUP_LOCK)
    if fd is None:
        return None
    data = json.dumps({"pid": os.getpid(), "force_at": force_at}).encode()
    write_over(fd, data)
    return Posted(fd)


def wanted(folder: Path) -> Want | None:
    """The backup's want for the account in `folder`, or None when no backup wants it."""
    try:
        # A string, not a Path per request (costs more than the open), nor os.path.join (five
        # times the f-string): `folder` is an account folder, never "/" (issue 18).
        fd = os.open(f"{folder}/{BACKUP_LOCK}", os.O_RDONLY | _FLAGS)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return None  # granted: nobody holds it exclusively
        raw = os.pread(fd, 256, 0)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        return Want(pid=int(data["pid"]), force_at=float(data["force_at"]))
    except (ValueError, TypeError, KeyError):
        # Locked but not written yet (the backup writes right after locking): wanted, not forced.
        return Want(pid=0, force_at=math.inf)


def idle_everywhere(folder: Path) -> bool:
    """True when no gateway process has a request in flight or a sync open on the account."""
    fd = try_flock(folder / BUSY_LOCK)
    if fd is None:
        return False
    os.close(fd)
    return True


class Activity:
    """This process's share of each account's busy lock, counted: the first `enter()` takes
    LOCK_SH, the last `leave()` lets go. Single-threaded (the event loop's)."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, count)

    def enter(self, folder: Path) -> None:
        held = self._held.get(folder)
        if held is not None:
            self._held[folder] = (held[0], held[1] + 1)
            return
        fd = os.open(f"{folder}/{BUSY_LOCK}", os.O_RDWR | os.O_CREAT | _FLAGS, 0o600)
        try:
            # Blocks only while an idle_everywhere() probe holds LOCK_EX: one system call long.
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._held[folder] = (fd, 1)

    def leave(self, folder: Path) -> None:
        fd, count = self._held[folder]
        if count > 1:
            self._held[folder] = (fd, count - 1)
            return
        del self._held[folder]
        os.close(fd)

    def count(self, folder: Path) -> int:
        held = self._held.get(folder)
        return held[1] if held else 0


class Held:
    """An account quiesced for a backup: its want posted and its worker lock held (no sync
    server runs). Leaving the block lets the lock go first, then the want."""

    def __init__(self, folder: Path, posted: Posted, lock: AccountLock) -> None:
        self.folder = folder
        self._posted = posted
        self._lock = lock

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._lock.release()  # first: held requests then find the lock free
        finally:
            self._posted.release()


def hold(collections_dir: Path, account: str, wait: float) -> Held | str:
    """Quiesce `account` for a backup (module doc): post the want with `force_at` = now +
    `wait`, then take its worker lock once the gateways have stopped its sync server, within
    `wait` + STOP_MARGIN seconds. `Held`, or why not (another backup, restore, export or prune
    holds it: refused at once, never waited for; the lock stayed taken; no folder here).
    Blocks (it polls); OSError when the account folder is not writable."""
    try:
        folder = account_dir(collections_dir, account)
    except NoAccountFolder:
        return "it has no folder on this node"
    posted = post(folder, force_at=time.time() + wait)
    if posted is None:
        # Backups, restores, exports and `accounts prune` all hold an account this way.
        return "a backup, restore or export holds it now; try again shortly"
    deadline = time.monotonic() + wait + STOP_MARGIN
    while (lock := try_lock(collections_dir, account)) is None:
        if time.monotonic() >= deadline:
            posted.release()
            return f"its sync server did not stop within {wait + STOP_MARGIN:g} s"
        time.sleep(POLL)
    return Held(folder, posted, lock)
