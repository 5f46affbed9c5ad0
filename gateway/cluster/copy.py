"""An account folder as one checked archive, for moving it between nodes' disks. Blocking file
work: callers run it in a thread, with the account's lock held (no worker writes meanwhile).

    pack(folder, out)   a tar of the folder's regular files and folders (no links, no lock file,
                        no stale upload temporaries), with `MANIFEST` first: SHA-256 of each file
    unpack(archive, into) -> problem or None
                        extracts with tarfile's "data" filter (nothing outside `into`, no links
                        out, no devices), then checks every file against the manifest (no file
                        more, none less, every hash) and SQLite's integrity_check on the
                        collection and the media database
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tarfile
from pathlib import Path

from gateway.syncsession.store import FILE_NAME as SYNC_LEASE
from gateway.syncsession.store import TURNSTILE
from gateway.workers.leftovers import stale_temporaries
from gateway.workers.lock import LOCK_NAME

MANIFEST = ".gateway-manifest.json"
DATABASES = ("collection.anki2", "media.db")


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every regular file that belongs to the account."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root)
        # The sync lease stays behind: the sync it names ends with the source's worker.
        skipped = set(stale_temporaries(files)) | {LOCK_NAME, MANIFEST, SYNC_LEASE, TURNSTILE}
        for name in sorted(files):
            path = here / name
            if name in skipped or path.is_symlink() or not path.is_file():
                continue
            found[path.relative_to(folder).as_posix()] = sha256_of(path)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    return found


def pack(folder: Path, out: Path) -> dict[str, str]:
    files = manifest(folder)
    listing = json.dumps(files, sort_keys=True).encode()
    with tarfile.open(out, "w") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(listing)
        tar.addfile(info, _Bytes(listing))
        for relative in files:
            tar.add(folder / relative, arcname=relative, recursive=False)
    return files


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk, self._at = self._data[self._at : end], min(end, len(self._data))
        return chunk


def unpack(archive: Path, into: Path) -> str | None:
    """None when `into` holds exactly what the archive's manifest lists, intact."""
    try:
        with tarfile.open(archive, "r") as tar:
            tar.extractall(into, filter="data")
        expected = json.loads((into / MANIFEST).read_bytes())
        (into / MANIFEST).unlink()
    except (tarfile.TarError, OSError, ValueError) as exc:
        return f"archive unreadable: {type(exc).__name__}"
    if not isinstance(expected, dict):
        return "manifest malformed"
    got = manifest(into)
    if set(got) != set(expected):
        return f"files differ: {len(set(got) ^ set(expected))} missing or extra"
    bad = [name for name, digest in expected.items() if got[name] != digest]
    if bad:
        return f"{len(bad)} files with another hash"
    for name in DATABASES:  # after the hashes: opening may checkpoint a WAL into the file
        if (into / name).is_file():
            problem = _integrity(into / name)
            if problem:
                return f"{name}: {problem}"
    return None


def _integrity(path: Path) -> str | None:
    try:
        db = sqlite3.connect(path)
        # Anki's own collation (Rust's `unicase`), which its indexes use; casefold is close.
        # Should they ever disagree on some name, the check fails and the move is refused:
        # the safe side, nothing changes.
        db.create_collation("unicase", _unicase)
        try:
            result = db.execute("PRAGMA integrity_check").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot be checked ({type(exc).__name__}: {exc})"
    return None if result and result[0] == "ok" else "integrity_check failed"


def _unicase(a: str, b: str) -> int:
    x, y = a.casefold(), b.casefold()
    return (x > y) - (x < y)
