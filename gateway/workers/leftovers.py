"""What a worker killed mid-upload leaves behind: the stock server's temporary upload file.

The stock server writes a full upload into a temporary file beside the collection
(`anki_io::new_tempfile_in_parent_of`, i.e. Rust's `tempfile` crate: `.tmp` and six random
letters or digits), opens it as SQLite to check it (hence `-wal`, `-shm` or `-journal` files
beside it), then renames it over `collection.anki2`. Measured with anki 26.9.3 during a full
upload: `<collections>/<account>/.tmpiRe0Jm` and `.tmpiRe0Jm-wal`. A worker killed before the
rename (its gateway SIGKILLed: PR_SET_PDEATHSIG then sends SIGTERM, which runs no destructor;
measured: `.tmpYyZkek` stayed) leaves that file, as large as the upload, forever. Media
uploads write their files straight into `media/` under their own names (measured: no
temporary files), so nothing in `media/` is touched.

- `stale_temporaries(names)` (pure): which entries of an account folder are such files.
- `remove_stale(folder)` deletes them and returns how many bytes went. The caller holds the
  account's lock (lock.py) and has not started its worker yet, so no worker of this account is
  writing one. Only regular files whose name matches exactly, in the account folder itself, go:
  never a folder or symlink, the collection, `media/`, `media.db`, their journals or WALs, or
  the lock file. An entry that vanishes or cannot be removed is skipped (and logged).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("gateway.workers")

# tempfile's default: prefix ".tmp", six random characters from [A-Za-z0-9], no suffix; then
# SQLite's companions of that file.
_TEMPORARY = re.compile(r"\.tmp[A-Za-z0-9]{6}(?:-wal|-shm|-journal)?")


def stale_temporaries(names: Iterable[str]) -> list[str]:
    return sorted(name for name in names if _TEMPORARY.fullmatch(name))


def remove_stale(folder: Path) -> int:
    """Deletes the stale temporary files in `folder`; the bytes freed."""
    freed = 0
    for name in stale_temporaries(os.listdir(folder)):
        path = folder / name
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            path.unlink()
        except OSError as exc:
            log.warning(
                "cannot remove a stale temporary file",
                extra={"file": name, "error": type(exc).__name__},
            )
            continue
        freed += info.st_size
    if freed:
        log.info(
            "removed stale temporary upload files", extra={"account": folder.name, "bytes": freed}
        )
    return freed
