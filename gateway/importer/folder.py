"""One folder of the earlier server's `collections/`: what it holds, read without changing it.

    inspect(root_fd, name) -> Source | Skipped | AlreadyImported

The Cognito-patched ankisyncd kept a user's data as the Anki desktop client does:
`<name>/collection.anki2` (SQLite; `-wal`/`-shm` beside it while open), `<name>/collection.media/`
(the files) and its own media index, `collection.media.server.db` (a schema of ankisyncd's, which
the stock server cannot read: the importer builds the stock server's `media.db` from the files
instead, and leaves the old index behind).

The folder's contents are untrusted (media names come from users): everything is looked at
through directory descriptors opened with O_NOFOLLOW, so a symbolic link is never followed, and a
file is only taken when it is a regular file with one link (a hard link could make a file outside
the folder, such as the gateway's secret, part of a collection). Media names follow the stock
server's own upload rules (rslib `sync/media/zip.rs`): NFC, at most 255 bytes, no path separator,
not empty, at most 100 MiB.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass, field

from gateway.identity.cognito import is_possible_username

COLLECTION = "collection.anki2"
WAL = "collection.anki2-wal"
OLD_MEDIA = "collection.media"
#: Left in an imported folder: a second run reads it and does nothing.
MARKER = "IMPORTED-BY-ANKI-COGNITO-GATEWAY"
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_MEDIA_NAME_BYTES = 255
MAX_MEDIA_BYTES = 100 * 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class MediaFile:
    name: str
    size: int


@dataclass(frozen=True)
class Source:
    """A folder that holds a collection to import."""

    name: str
    #: None when there is no collection.anki2: a folder whose import was cut off after the
    #: collection moved (move.py resumes it), or not a collection folder at all.
    collection_bytes: int | None
    has_wal: bool
    media: tuple[MediaFile, ...]
    #: (file name, why) for media files that are left behind.
    skipped_media: tuple[tuple[str, str], ...] = field(default=())

    @property
    def media_bytes(self) -> int:
        return sum(m.size for m in self.media)


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class AlreadyImported:
    name: str
    note: str


def is_possible_folder_name(name: str) -> bool:
    """What can be an earlier server's user folder: a possible Cognito username or email,
    without the characters a ListUsers filter cannot quote."""
    return is_possible_username(name) and not name.startswith(".") and not set(name) & set('"\\')


def open_dir(parent_fd: int, name: str) -> int:
    """A descriptor of `name` in `parent_fd`; OSError (ELOOP, ENOTDIR) for anything but a real
    directory."""
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def regular(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name`, or None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def refusal(st: os.stat_result) -> str | None:
    """Why a file cannot be taken: not a regular file, or linked from elsewhere too."""
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink != 1:
        return "hard link (could be a file outside the folder)"
    return None


def inspect(root_fd: int, name: str) -> Source | Skipped | AlreadyImported:
    if not is_possible_folder_name(name):
        return Skipped(name, "unsafe name (not a possible Cognito username or email)")
    st = regular(root_fd, name)
    if st is None:
        return Skipped(name, "gone")
    if stat.S_ISLNK(st.st_mode):
        return Skipped(name, "symbolic link (not followed)")
    if not stat.S_ISDIR(st.st_mode):
        return Skipped(name, "not a folder")
    fd = open_dir(root_fd, name)
    try:
        marker = regular(fd, MARKER)
        if marker is not None and stat.S_ISREG(marker.st_mode):
            return AlreadyImported(name, _marker_note(fd))
        if marker is not None:
            # The import ends by writing its marker there: it could not, after moving the
            # collection in (the account left unserved). Refused before anything moves.
            return Skipped(
                name,
                f"{MARKER} is a folder or link, where the import writes its marker; rename it,"
                " then run again",
            )
        col = regular(fd, COLLECTION)
        media_dir = regular(fd, OLD_MEDIA)
        if col is None and media_dir is None:
            return Skipped(name, f"not a collection folder (no {COLLECTION})")
        if col is not None:
            why = refusal(col)
            if why is not None:
                return Skipped(name, f"{COLLECTION}: {why}")
            if not _has_sqlite_header(fd):
                return Skipped(name, f"{COLLECTION} is not an SQLite database")
        wal = regular(fd, WAL)
        if wal is not None and (why := refusal(wal)) is not None:
            return Skipped(name, f"{WAL}: {why}")
        if media_dir is None:
            media: tuple[MediaFile, ...] = ()
            skipped: tuple[tuple[str, str], ...] = ()
        elif not stat.S_ISDIR(media_dir.st_mode):
            return Skipped(name, f"{OLD_MEDIA}: symbolic link or not a folder")
        else:
            media, skipped = _media(fd)
        size = col.st_size if col is not None else None
        return Source(name, size, wal is not None and wal.st_size > 0, media, skipped)
    finally:
        os.close(fd)


def media_problem(name: str, st: os.stat_result) -> str | None:
    """Why a media file cannot be imported, as the stock server would refuse its upload."""
    why = refusal(st)
    if why is not None:
        return why
    if unicodedata.normalize("NFC", name) != name:
        return "name not in Unicode NFC"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_MEDIA_NAME_BYTES:
        return "name over 255 bytes"
    if "\\" in name or not name.isprintable():
        return "name with a backslash or control character"
    if st.st_size == 0:
        return "empty (the sync protocol has no empty files)"
    if st.st_size > MAX_MEDIA_BYTES:
        return "over 100 MiB"
    return None


def _media(folder_fd: int) -> tuple[tuple[MediaFile, ...], tuple[tuple[str, str], ...]]:
    fd = open_dir(folder_fd, OLD_MEDIA)
    taken: list[MediaFile] = []
    skipped: list[tuple[str, str]] = []
    try:
        for entry in os.scandir(fd):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                skipped.append((entry.name, "a folder"))
                continue
            why = media_problem(entry.name, st)
            if why is None:
                taken.append(MediaFile(entry.name, st.st_size))
            else:
                skipped.append((entry.name, why))
    finally:
        os.close(fd)
    return tuple(sorted(taken, key=lambda m: m.name)), tuple(sorted(skipped))


def _has_sqlite_header(folder_fd: int) -> bool:
    fd = os.open(COLLECTION, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    try:
        return os.pread(fd, len(SQLITE_HEADER), 0) == SQLITE_HEADER
    finally:
        os.close(fd)


def _marker_note(folder_fd: int) -> str:
    fd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    try:
        text = os.read(fd, 200).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return " ".join(text.split())
