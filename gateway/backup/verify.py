"""Checking a snapshot: its signed manifest, then each account's files as a restore would use them.

    read_manifest(store, snapshot, key) -> dict          BackupError when missing or refused
    stage(store, snapshot, account, entry, target, now_ms) -> str | None
        downloads the account's files into `target` (a new folder), checks them and marks the
        collection's schema changed at `now_ms`; None when they are sound, else the first
        problem (the folder is left for the caller)
    verify(store, snapshot, key, scratch) -> dict[str, str]   {account: problem}; empty: sound

`python -m gateway backup verify DEST[/snapshots/NAME]` (backup/__init__.py) runs `verify()`.
What `stage()` checks, each before the next, nothing of it run or served yet:
- every file (collection.anki2, media.db, each media file) has the SHA-256 the signed manifest
  records (manifest.py): a file replaced or damaged in the store is refused;
- collection.anki2 and media.db pass collectionfile.problem() on this private copy: SQLite's
  integrity check, nothing a user's SQL could have added (triggers, views, virtual tables), a
  schema version Anki knows;
- the collection takes the restore's one write, `col.scm` set to `now_ms` (restore.py: each
  device is then asked for a full sync): a user's CHECK constraint on `col` that refuses it
  refuses the snapshot here, in `verify` as in a restore, never half-way through one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from gateway.backup.manifest import ManifestError, open_sealed
from gateway.backup.snapshot import BackupError, sha256
from gateway.backup.store import Store
from gateway.workers import collectionfile

_KINDS = {"collection.anki2": "collection", "media.db": "media"}


def read_manifest(store: Store, snapshot: str, key: bytes) -> dict[str, Any]:
    try:
        raw = store.read(f"snapshots/{snapshot}/manifest.json")
    except Exception as exc:  # noqa: BLE001 - a folder's OSError or S3's ClientError alike
        raise BackupError(f"snapshot {snapshot}: its manifest cannot be read ({exc})") from None
    try:
        return open_sealed(raw, snapshot, key)
    except ManifestError as exc:
        raise BackupError(f"snapshot {snapshot} refused: {exc}") from None


def stage(
    store: Store, snapshot: str, account: str, entry: dict[str, Any], target: Path, now_ms: int
) -> str | None:
    target.mkdir(mode=0o700)
    (target / "media").mkdir()
    wanted = [
        (f"snapshots/{snapshot}/accounts/{account}/{name}", target / name, name, digest)
        for name, digest in sorted(entry["files"].items())
    ] + [
        (f"blobs/{digest}", target / "media" / name, f"media file {name!r}", digest)
        for name, digest in sorted(entry["media"].items())
    ]
    for key, path, what, digest in wanted:
        try:
            store.get(key, path)
        except Exception as exc:  # noqa: BLE001 - a folder's OSError or S3's ClientError alike
            return f"{what} cannot be read from the store ({type(exc).__name__})"
        if sha256(path) != digest:
            return f"{what} is not the file the backup took (its SHA-256 is not the manifest's)"
    for name, kind in _KINDS.items():
        if (target / name).is_file():
            problem = collectionfile.problem(target / name, kind)
            if problem is not None:
                return f"{name}: {problem}"
    collection = target / "collection.anki2"
    if collection.is_file():
        problem = collectionfile.mark_schema_changed(collection, now_ms)
        if problem is not None:
            return f"collection.anki2: {problem}"
    return None


def verify(store: Store, snapshot: str, key: bytes, scratch: Path) -> dict[str, str]:
    """Every account of the snapshot, one at a time in `scratch` (emptied after each)."""
    manifest = read_manifest(store, snapshot, key)
    problems: dict[str, str] = {}
    for account, entry in sorted(manifest["accounts"].items()):
        target = scratch / account
        try:
            problem = stage(store, snapshot, account, entry, target, int(time.time() * 1000))
        finally:
            shutil.rmtree(target, ignore_errors=True)
        if problem is not None:
            problems[account] = problem
    for filename, digest in (
        ("registry.sqlite3", manifest.get("registry")),
        ("gateway.secret", manifest.get("secret_sha256")),
    ):
        if digest is None:
            continue
        target = scratch / filename
        try:
            store.get(f"snapshots/{snapshot}/{filename}", target)
            if sha256(target) != digest:
                problems[f"({filename})"] = "not the file the backup took"
        except Exception as exc:  # noqa: BLE001 - a folder's OSError or S3's ClientError alike
            problems[f"({filename})"] = f"cannot be read from the store ({type(exc).__name__})"
        finally:
            target.unlink(missing_ok=True)
    return problems
