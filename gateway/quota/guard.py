"""Quotas where the bytes arrive: what the proxy asks before and while a sync request's body
reaches the account's worker. The file system is read here (sizes, in a thread where a walk
may be long); the rules are limits.py's.

    QuotaGuard(defaults, folder_of)          folder_of(account): its folder (Registry.folder)
        .limits_of(account)                  the account's `Limits` (registry override applied)
        .collection(account)                 `OverQuota` if the collection on disk is over its
                                             limit (normal syncs: sync/meta, start, applyChanges,
                                             applyChunk)
        .upload(account)                     a `BodyCheck` for a full upload (sync/upload)
        await .media(account)                a `MediaCheck` for msync/uploadChanges
        MediaCheck.undo()                    the worker did not take that upload (not 200)

    BodyCheck.chunk(compressed, inflated)    after each metered chunk (uploads/payload.py)
    MediaCheck.on_meta(changes)              the upload's (filename, size or None) pairs, from
                                             the meter's zip check (uploads/mediazip.py) once
                                             `_meta` is read; both raise `OverQuota` (limits.py)

Media totals: walking a media folder of 20,000 files costs tens of milliseconds, and a media
sync sends up to 25 files a request; so an account's total is walked (in a thread) at most
every `MEDIA_TOTAL_SECONDS` and moved on by each upload as soon as its `_meta` passed the
check (uploads at once see each other's), taken back if the worker did not answer it 200 (one
whose JSON carries the worker's own error stays counted: the total then counts files it did not
take, until the next walk). Each gateway process keeps its own totals. A total that is a few
files off for a while only moves the moment the limit bites by those files. At most
`MEDIA_TOTALS_KEPT` accounts' totals are kept.

An account's folder is resolved (`folder_of`: two path resolutions, 0.1-0.2 ms on a busy host)
once and remembered (`FOLDERS_KEPT` accounts), as the backup gate does (backup/gate.py): four
requests of every sync ask `collection()` (issue 18). The sizes themselves are read each time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from cachetools import LRUCache, TTLCache

from gateway.quota import limits as rules
from gateway.quota.limits import Limits, Override
from gateway.registry.base import Account
from gateway.workers.usage import collection_bytes, media_bytes

#: Accounts whose resolved folder is remembered.
FOLDERS_KEPT = 4096
#: Seconds an account's media total is trusted before the folder is walked again.
MEDIA_TOTAL_SECONDS = 600.0
MEDIA_TOTALS_KEPT = 100_000


def override_of(account: Account) -> Override:
    return Override(
        account.quota_collection_upload_megs,
        account.quota_collection_megs,
        account.quota_media_megs,
        account.quota_media_file_megs,
    )


def stored_size(media_dir: Path, filename: str) -> int:
    """The size of the media file the worker holds as `filename` (0: none, or a name that is
    not a plain file name: such a file cannot be in the folder)."""
    if not filename or filename in (".", "..") or any(c in filename for c in "/\\\0"):
        return 0
    try:
        return os.stat(media_dir / filename, follow_symlinks=False).st_size
    except (OSError, ValueError):
        return 0


class BodyCheck:
    """One request body's quota check (see the module doc)."""

    def chunk(self, compressed: int, inflated: int) -> None:
        pass


class UploadCheck(BodyCheck):
    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def chunk(self, compressed: int, inflated: int) -> None:
        rules.check_upload(self._limits, compressed, inflated)


class MediaTotal:
    """One account's media bytes as this process knows them; shared by its uploads."""

    def __init__(self, held: int) -> None:
        self.held = held


class MediaCheck(BodyCheck):
    """Once `_meta` names the files (each file's size came with its header, before its data):
    each against the per-file limit, by its name (the zip's own names are "0", "1", ...:
    no help to the user), and the account's total with what the upload adds, replaces and
    deletes, each file name once (its largest entry). The total is read when `_meta` is, and
    what the upload adds is counted into it at once, so an upload arriving meanwhile sees it;
    `undo()` takes it back (the worker did not take the upload). `total` is what the media
    takes once the worker applies the upload (known after `_meta`, else None)."""

    def __init__(self, limits: Limits, media_dir: Path, current: MediaTotal) -> None:
        self._limits = limits
        self._dir = media_dir
        self._current = current
        self._counted = 0
        self.total: int | None = None

    def on_meta(self, changes: list[tuple[str, int | None]]) -> None:
        # A name may come more than once (the stock server takes such a `_meta`): its stored
        # size goes once, and it counts as its largest entry (whichever the server keeps).
        final: dict[str, int] = {}
        for filename, size in changes:
            if size is not None:
                rules.check_media_file(self._limits, filename, size)
            final[filename] = max(final.get(filename, 0), size or 0)
        held = self._current.held
        total = held
        for filename, size in final.items():
            total += size - stored_size(self._dir, filename)
        self.total = max(total, 0)
        if self.total > held:  # an upload that frees room always passes
            rules.check_media_total(self._limits, self.total)
        self._counted = self.total - held
        self._current.held = self.total

    def undo(self) -> None:
        self._current.held = max(self._current.held - self._counted, 0)
        self._counted = 0


class QuotaGuard:
    def __init__(
        self,
        defaults: Limits,
        folder_of: Callable[[Account], Path],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.defaults = defaults
        self._folder_of = folder_of
        #: account name -> its media bytes
        self._media: TTLCache[str, MediaTotal] = TTLCache(
            MEDIA_TOTALS_KEPT, MEDIA_TOTAL_SECONDS, timer=clock
        )
        self._folders: LRUCache[str, Path] = LRUCache(FOLDERS_KEPT)

    def _folder(self, account: Account) -> Path:
        folder = self._folders.get(account.name)
        if folder is None:
            folder = self._folders[account.name] = self._folder_of(account)
        return folder

    def limits_of(self, account: Account) -> Limits:
        return self.defaults.with_override(override_of(account))

    def collection(self, account: Account) -> None:
        """`OverQuota` when the collection on disk (file and WAL: two stats) is over."""
        limits = self.limits_of(account)
        if limits.collection is not None:
            rules.check_collection(limits, collection_bytes(self._folder(account)))

    def upload(self, account: Account) -> BodyCheck:
        return UploadCheck(self.limits_of(account))

    async def media(self, account: Account) -> MediaCheck:
        folder = self._folder(account)
        known = self._media.get(account.name)
        if known is None:
            held = await asyncio.to_thread(media_bytes, folder)
            known = self._media.setdefault(account.name, MediaTotal(held))
        return MediaCheck(self.limits_of(account), folder / "media", known)
