"""Descriptors of the sync lease's small files, kept open between requests.

    files = OpenFiles(most=256)
    kept = files.take(path)  # open (0o600, created, never through a symlink) or the kept one
    ...flock(kept.fd, ...), pread...; flock(kept.fd, LOCK_UN)
    files.give(kept)         # kept for the next request (the caller dropped its locks)
    files.drop(folder)       # close the folder's files (its worker stopped)
    files.close()            # close every file not in use (the gateway stops)

Opening and closing the lease file and the turnstile file on every request were two of the
few syscalls a guarded request costs (store.py). A kept descriptor is checked against its path
on every `take` (`lstat` of the path: the same file, by device and inode), so a folder moved
away (`FileNotFoundError` from the reopen: the caller answers 503), moved back, or a file
replaced, is opened afresh, never written through a stale descriptor. Locks belong to the open
file: every holder of one kept descriptor shares its flock, so callers exclude each other
within the process by other means (store.py: `update` never awaits; turnstile.py: an asyncio
lock in front) and must unlock before `give`.

At most `most` descriptors stay open: the least recently taken one not in use is closed first
(a process that only forwards to other processes' workers never hears that they stopped).
Not thread-safe: one event loop's thread.
"""

from __future__ import annotations

import os


def open_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


class Kept:
    """One kept descriptor (`fd`) and how many callers use it now."""

    __slots__ = ("fd", "inode", "users", "stale")

    def __init__(self, fd: int) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.inode = (st.st_dev, st.st_ino)
        self.users = 0
        self.stale = False


class OpenFiles:
    def __init__(self, most: int = 256) -> None:
        self._most = most
        self._kept: dict[str, Kept] = {}  # oldest taken first

    def take(self, path: str) -> Kept:
        kept = self._kept.pop(path, None)
        if kept is not None and _same(path, kept):
            self._kept[path] = kept  # now the most recent
        else:
            if kept is not None:
                self._retire(kept)
            kept = self._kept[path] = Kept(open_file(path))
            self._trim()
        kept.users += 1
        return kept

    def give(self, kept: Kept) -> None:
        kept.users -= 1
        if kept.stale and not kept.users:
            os.close(kept.fd)

    def drop(self, folder: str) -> None:
        """Close the kept files of `folder` (those in use once given back)."""
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self._kept if p.startswith(prefix)]:
            self._retire(self._kept.pop(path))

    def close(self) -> None:
        for path in list(self._kept):
            self._retire(self._kept.pop(path))

    def __len__(self) -> int:
        return len(self._kept)

    @staticmethod
    def _retire(kept: Kept) -> None:
        """No longer kept (taken out of `_kept`): closed now, or by its last `give`."""
        if kept.users:
            kept.stale = True
        else:
            os.close(kept.fd)

    def _trim(self) -> None:
        for path in list(self._kept):
            if len(self._kept) <= self._most:
                return
            if not self._kept[path].users:
                self._retire(self._kept.pop(path))


def _same(path: str, kept: Kept) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == kept.inode
