"""Judging an earlier server's collection before anything of it moves, on a private copy.

    collection_problem(root_fd, folder, limit) -> str | None
        why `<folder>/collection.anki2` (with its WAL) must not be imported; None when it may

Run for every folder in the dry run and in the real run alike, so the plan says what the import
will do. The rule: what a stock client could have produced imports, nothing else does.
- Its size (collection and WAL) is at most `limit` bytes: three times
  `workers.max_payload_megs`, the largest body the stock server inflates (payload.py), so the
  largest collection a device could upload to it again. A file with a hole (sparse) is refused
  at any size: SQLite writes every page it counts (collectionfile.size_problem).
- A copy (collection and WAL, read through descriptors: O_NOFOLLOW, the checked inodes) in a
  temporary folder passes collectionfile.problem(): integrity, no trigger, view or virtual
  table, a schema version Anki opens (11 to 18, with Anki's `unicase` collation).
The move re-checks the collection it moved (move.py), in case it changed in between.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gateway import collectionfile
from gateway.importer.folder import COLLECTION, WAL, open_dir, refusal, regular


def collection_problem(root_fd: int, folder: str, limit: int) -> str | None:
    folder_fd = open_dir(root_fd, folder)
    try:
        fds = {}
        try:
            for name in (COLLECTION, WAL):
                st = regular(folder_fd, name)
                if st is None:
                    continue
                why = refusal(st)
                if why is not None:
                    return f"{name}: {why}"
                fds[name] = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd
                )
            if COLLECTION not in fds:
                return None  # nothing to judge: a cut-off import's folder (move.py resumes it)
            total = sum(os.fstat(fd).st_size for fd in fds.values())
            for name, fd in fds.items():
                why = collectionfile.size_problem(fd, limit)
                if why is not None:
                    return f"{name}: {why}"
            if total > limit:
                mib = (total >> 20, limit >> 20)
                return f"{COLLECTION} with its WAL: {mib[0]} MiB, over the {mib[1]} MiB limit"
            with tempfile.TemporaryDirectory(prefix="gateway-import-") as scratch:
                for name, fd in fds.items():
                    with (
                        os.fdopen(os.dup(fd), "rb") as src,
                        open(Path(scratch) / name, "wb") as out,
                    ):
                        shutil.copyfileobj(src, out, 1 << 20)
                why = collectionfile.problem(Path(scratch) / COLLECTION, "collection")
            return None if why is None else f"{COLLECTION}: {why}"
        finally:
            for fd in fds.values():
                os.close(fd)
    finally:
        os.close(folder_fd)
