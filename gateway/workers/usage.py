"""What an account's folder holds: collection size and media files. Reads the file system only.

    usage(folder) -> Usage(collection_bytes, media_files, media_bytes)
    collection_bytes(folder), media_usage(folder) -> (files, bytes), media_bytes(folder)

The collection is `collection.anki2` plus its SQLite WAL if any; media are the files in
`media/` (the stock server's layout, anki-sync-protocol.md). A missing folder counts as empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    collection_bytes: int = 0
    media_files: int = 0
    media_bytes: int = 0


def usage(folder: Path) -> Usage:
    return Usage(collection_bytes(folder), *media_usage(folder))


def collection_bytes(folder: Path) -> int:
    """`collection.anki2` and its WAL, in bytes (two stats)."""
    return files_bytes((folder / "collection.anki2", folder / "collection.anki2-wal"))


def files_bytes(paths: Iterable[str | Path]) -> int:
    """The sizes of the files at `paths` added up, in bytes; a missing one counts 0."""
    size = 0
    for path in paths:
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    return size


def media_usage(folder: Path) -> tuple[int, int]:
    """(files, bytes) in `media/` (a walk: one stat per file)."""
    files = size = 0
    try:
        with os.scandir(folder / "media") as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return files, size


def media_bytes(folder: Path) -> int:
    return media_usage(folder)[1]


def human_bytes(count: int) -> str:
    """1536 -> "1.5 KB" (decimal units, as phones and Anki show sizes)."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
