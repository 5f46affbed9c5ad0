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
        MediaCheck.done(applied)             the upload ended; `applied`: the worker answered
                                             it 200 (its files stay counted)

    BodyCheck.chunk(compressed, inflated)    after each metered chunk (uploads/payload.py)
    MediaCheck.on_meta(changes)              the upload's (filename, size or None) pairs, from
                                             the meter's zip check (uploads/mediazip.py) once
                                             `_meta` is read; both raise `OverQuota` (limits.py)

Media totals (mediatotal.py): one per account, in a small file in its folder that every gateway
process on the data folder shares. Walking a media folder of 20,000 files costs tens of
milliseconds and a media sync sends up to 25 files a request, so the folder is walked (in a
thread, before the body is read) at most every `mediatotal.WALK_SECONDS`; in between, each
upload reserves what it adds as soon as its `_meta` passed the check (uploads at once, through
any process, see each other's), and the reservation becomes part of the total when the worker
answers 200, or goes when it does not (one whose JSON carries the worker's own error stays
counted: the total then counts files it did not take, until the next walk). A total that is a
few files off for a while only moves the moment the limit bites by those files.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from gateway.quota import limits as rules
from gateway.quota.limits import Limits, Override
from gateway.quota.mediatotal import MediaTotal
from gateway.registry.base import Account
from gateway.workers.usage import collection_bytes


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


class MediaCheck(BodyCheck):
    """Once `_meta` names the files (each file's size came with its header, before its data):
    each against the per-file limit, by its name (the zip's own names are "0", "1", ...:
    no help to the user), and the account's total with what the upload adds, replaces and
    deletes, each file name once (its largest entry). What the upload adds is reserved in the
    shared total at once, so an upload arriving meanwhile, through any process, sees it;
    `done()` settles it. `total` is what the media takes once the worker applies the upload
    (known after `_meta`, else None)."""

    def __init__(self, limits: Limits, media_dir: Path, shared: MediaTotal) -> None:
        self._limits = limits
        self._dir = media_dir
        self._shared = shared
        self._key = secrets.token_hex(8)
        self._reserved = False
        self.total: int | None = None

    def on_meta(self, changes: list[tuple[str, int | None]]) -> None:
        # A name may come more than once (the stock server takes such a `_meta`): its stored
        # size goes once, and it counts as its largest entry (whichever the server keeps).
        final: dict[str, int] = {}
        for filename, size in changes:
            if size is not None:
                rules.check_media_file(self._limits, filename, size)
            final[filename] = max(final.get(filename, 0), size or 0)
        change = sum(size - stored_size(self._dir, name) for name, size in final.items())

        def decide(current: int) -> int:
            self.total = max(current + change, 0)
            if self.total > current:  # an upload that frees room always passes
                rules.check_media_total(self._limits, self.total)
            return self.total - current

        self._shared.reserve(self._key, decide)
        self._reserved = True

    def done(self, applied: bool) -> None:
        """The upload ended (once; later calls do nothing): `applied` if the worker took it."""
        if self._reserved:
            self._reserved = False
            self._shared.settle(self._key, applied)


class QuotaGuard:
    def __init__(
        self,
        defaults: Limits,
        folder_of: Callable[[Account], Path],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.defaults = defaults
        self._folder_of = folder_of
        self._clock = clock  # wall-clock seconds: the media totals are shared (mediatotal.py)

    def limits_of(self, account: Account) -> Limits:
        return self.defaults.with_override(override_of(account))

    def collection(self, account: Account) -> None:
        """`OverQuota` when the collection on disk (file and WAL: two stats) is over."""
        limits = self.limits_of(account)
        if limits.collection is not None:
            rules.check_collection(limits, collection_bytes(self._folder_of(account)))

    def upload(self, account: Account) -> BodyCheck:
        return UploadCheck(self.limits_of(account))

    async def media(self, account: Account) -> MediaCheck:
        folder = self._folder_of(account)
        shared = MediaTotal(folder, clock=self._clock)
        await asyncio.to_thread(shared.refresh)
        return MediaCheck(self.limits_of(account), folder / "media", shared)
