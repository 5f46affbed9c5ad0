"""What an account's folder holds: collection size and media files. Reads the file system only.

    usage(folder) -> Usage(collection_bytes, media_files, media_bytes)

The collection is `collection.anki2` plus its SQLite WAL if any; media are the files in
`media/` (the stock server's layout, anki-sync-protocol.md). A missing folder counts as empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    collection_bytes: int = 0
    media_files: int = 0
    media_bytes: int = 0


def usage(folder: Path) -> Usage:
    collection = 0
    for name in ("collection.anki2", "collection.anki2-wal"):
        try:
            collection += (folder / name).stat().st_size
        except OSError:
            pass
    files = size = 0
    try:
        with os.scandir(folder / "media") as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return Usage(collection, files, size)


def human_bytes(count: int) -> str:
    """1536 -> "1.5 KB" (decimal units, as phones and Anki show sizes)."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
