"""Quotas where the bytes arrive: what the proxy asks before and while a sync request's body
reaches the account's worker. The file system is read here (sizes, in a thread where a walk
may be long); the rules are limits.py's.

    QuotaGuard(defaults, folder_of)          folder_of(account): its folder (Registry.folder)
        .limits_of(account)                  the account's `Limits` (registry override applied)
        await .meta(account)                 `OverQuota` (once) when the collection is over its
                                             limit and a sync that adds was refused since the
                                             last sync/meta (the message Anki shows)
        await .collection(account, method)   for sync/applyChanges and applyChunk: a
                                             `ShrinkOnly` check while the collection is over its
                                             limit, for sync/start and applyGraves a
                                             `GravesCheck`; else None
        .upload(account)                     a `BodyCheck` for a full upload (sync/upload)
        await .media(account)                a `MediaCheck` for msync/uploadChanges
        MediaCheck.done(applied)             the upload ended; `applied`: the worker answered
                                             it 200 (its files stay counted)

    BodyCheck.chunk(compressed, inflated)    after each metered chunk (uploads/payload.py)
    BodyCheck.whole(body)                    once the whole body is here, before the worker
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

A collection over its limit (the operator lowered it, or a sync grew it past): syncs that only
delete pass; one that adds (growth.py) is refused at applyChanges or applyChunk (413: Anki
shows "A network error occurred" and aborts, the server rolls the sync back) and leaves a
marker file in the account folder; the account's next sync/meta, through any process, takes
the marker and answers with the message (`cont: false`), once. A full download, or a full
upload within the limit, always passes. "Over" is the collection's live size (livesize.py:
deleted notes free pages the file keeps), read only when the file and its WAL together are
over the limit (two stats), so accounts under it pay nothing more.

Deletions while over: the stock server keeps a grave for every id it is sent, existing or not
(graves.py), so `start`'s and `applyGraves`' graves are read (at most `graves.MAX_BODY`) and
spent from the account's deletion allowance (allowance.py, a file every process shares); once
it is spent they are refused as growth is, with their own message. A sync/meta that finds the
account under its limit clears the allowance. The marker holds what was refused ("graves" or
nothing), so the message names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from cachetools import LRUCache

from gateway import protocol
from gateway.errors import GatewayError
from gateway.quota import graves, growth
from gateway.quota import limits as rules
from gateway.quota.allowance import FILE_NAME as ALLOWANCE_FILE
from gateway.quota.allowance import GraveAllowance
from gateway.quota.limits import Limits, OverQuota, Override
from gateway.quota.livesize import live_bytes
from gateway.quota.mediatotal import MediaTotal
from gateway.registry.base import Account
from gateway.workers.lock import write_over
from gateway.workers.usage import files_bytes

#: Account folders remembered once resolved.
FOLDERS = 4096
#: In the account folder while a sync that adds was refused and no sync/meta has shown why.
REFUSED_MARKER = ".gateway-quota-refused"


def quota_megs(account: Account) -> tuple[int | None, ...]:
    """The account's `QUOTA_FIELDS`, in that order (`Override`'s fields)."""
    return (
        account.quota_collection_upload_megs,
        account.quota_collection_megs,
        account.quota_media_megs,
        account.quota_media_file_megs,
    )


def override_of(account: Account) -> Override:
    return Override(*quota_megs(account))


def stored_size(media_dir: Path, filename: str) -> int:
    """The size of the media file the worker holds as `filename` (0: none, or a name that is
    not a plain file name: such a file cannot be in the folder)."""
    if not filename or filename in (".", "..") or any(c in filename for c in "/\\\0"):
        return 0
    try:
        return os.stat(media_dir / filename, follow_symlinks=False).st_size
    except (OSError, ValueError):
        return 0


def take_marker(marker: Path) -> bytes | None:
    """The refusal marker's content (what was refused), removed; None: no marker."""
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        kind = os.read(fd, 16)
    finally:
        os.close(fd)
    try:
        os.unlink(marker)
    except OSError:
        return None  # taken by another process meanwhile: it shows the message
    return kind


class BodyCheck:
    """One request body's quota check (see the module doc)."""

    def chunk(self, compressed: int, inflated: int) -> None:
        pass

    def whole(self, body: object) -> None:
        pass


class UploadCheck(BodyCheck):
    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def chunk(self, compressed: int, inflated: int) -> None:
        rules.check_upload(self._limits, compressed, inflated)


class ShrinkOnly(BodyCheck):
    """A sync request to a collection over its limit: it passes only if it adds nothing
    (growth.py); a refusal leaves the marker for the next sync/meta."""

    max_body = growth.MAX_BODY
    kind = b""  # what the marker says was refused (`meta`)

    def __init__(self, method: str, message: str, marker: Path) -> None:
        self._method = method
        self._message = message
        self._marker = marker

    def chunk(self, compressed: int, inflated: int) -> None:
        if max(compressed, inflated) > self.max_body:
            self._refuse()

    def whole(self, body: object) -> None:
        # Spooled or missing: not a body this could let pass. The meter read it already (one
        # zstd frame within max_body), so inflating it again cannot fail or grow.
        if not isinstance(body, bytes):
            self._refuse()
        try:
            inflated = protocol.inflate(body, self.max_body)
        except GatewayError:
            self._refuse()
        if not self._passes(inflated):
            self._refuse()

    def _passes(self, inflated: bytes) -> bool:
        return growth.adds(self._method, inflated) is None

    def _refuse(self) -> NoReturn:
        with contextlib.suppress(OSError):
            fd = os.open(
                self._marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
            )
            try:
                write_over(fd, self.kind)  # the last refusal names it
            finally:
                os.close(fd)
        raise OverQuota(self._message)


class GravesCheck(ShrinkOnly):
    """`start`'s or `applyGraves`' graves to a collection over its limit using `live` bytes:
    they pass while the account's deletion allowance (allowance.py) holds them."""

    max_body = graves.MAX_BODY
    kind = b"graves"

    def __init__(
        self, method: str, message: str, marker: Path, allowance: GraveAllowance, live: int
    ) -> None:
        super().__init__(method, message, marker)
        self._allowance = allowance
        self._live = live

    def _passes(self, inflated: bytes) -> bool:
        ids = graves.count(self._method, inflated)
        return ids is not None and self._allowance.spend(ids, self._live)


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


@dataclass(frozen=True)
class _Folder:
    """An account's folder, resolved once, with the paths read on every request as strings
    (a `Path` join and its conversion cost more than the stat itself)."""

    folder: Path
    collection: str
    wal: str
    allowance: str

    @classmethod
    def of(cls, folder: Path) -> _Folder:
        return cls(
            folder,
            str(folder / "collection.anki2"),
            str(folder / "collection.anki2-wal"),
            str(folder / ALLOWANCE_FILE),
        )

    def collection_bytes(self) -> int:
        """`collection.anki2` and its WAL, in bytes (workers/usage.py `collection_bytes`)."""
        return files_bytes((self.collection, self.wal))


class QuotaGuard:
    def __init__(
        self,
        defaults: Limits,
        folder_of: Callable[[Account], Path],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.defaults = defaults
        self._resolve = folder_of
        # An account's folder is a resolved path (two realpaths, ~160 us on four requests of
        # every sync, issue 18): resolved once per account name and remembered; only its
        # sizes and files are read on every request.
        self._folders: LRUCache[str, _Folder] = LRUCache(FOLDERS)
        # An account's limits, by its override (most accounts share the defaults'): applying an
        # override walks the fields, on every request of every sync.
        self._limits: LRUCache[tuple[int | None, ...], Limits] = LRUCache(FOLDERS)
        self._clock = clock  # wall-clock seconds: the media totals are shared (mediatotal.py)

    def _paths_of(self, account: Account) -> _Folder:
        paths = self._folders.get(account.name)
        if paths is None:
            paths = self._folders[account.name] = _Folder.of(self._resolve(account))
        return paths

    def _folder_of(self, account: Account) -> Path:
        return self._paths_of(account).folder

    def limits_of(self, account: Account) -> Limits:
        megs = quota_megs(account)
        limits = self._limits.get(megs)
        if limits is None:
            limits = self._limits[megs] = self.defaults.with_override(Override(*megs))
        return limits

    async def _live_over(self, account: Account, paths: _Folder | None = None) -> int | None:
        """The collection's live size if it is over its limit, else None (module doc: two
        stats, and the live size only when those are over). `paths`: the account's, if known."""
        limit = self.limits_of(account).collection
        if limit is None:
            return None
        if paths is None:
            paths = self._paths_of(account)
        if paths.collection_bytes() <= limit:
            return None
        live = await asyncio.to_thread(live_bytes, paths.folder / "collection.anki2")
        return live if live > limit else None

    async def meta(self, account: Account) -> None:
        paths = self._paths_of(account)  # one look-up for every path below (issue 18)
        live = await self._live_over(account, paths)
        if live is None:
            GraveAllowance.clear_file(paths.allowance)
            return
        kind = take_marker(paths.folder / REFUSED_MARKER)
        if kind is None:
            return  # no sync was refused since the last meta: this one may pass
        raise OverQuota(rules.over_collection(self.limits_of(account), live, kind == b"graves"))

    async def collection(self, account: Account, method: str) -> BodyCheck | None:
        live = await self._live_over(account)
        if live is None:
            return None
        folder = self._folder_of(account)
        limits = self.limits_of(account)
        if method in graves.INSPECTED:
            message = rules.over_collection(limits, live, graves=True)
            allowance = GraveAllowance(folder)
            return GravesCheck(method, message, folder / REFUSED_MARKER, allowance, live)
        message = rules.over_collection(limits, live)
        return ShrinkOnly(method, message, folder / REFUSED_MARKER)

    def upload(self, account: Account) -> BodyCheck:
        return UploadCheck(self.limits_of(account))

    async def media(self, account: Account) -> MediaCheck:
        folder = self._folder_of(account)
        shared = MediaTotal(folder, clock=self._clock)
        await asyncio.to_thread(shared.refresh)
        return MediaCheck(self.limits_of(account), folder / "media", shared)
