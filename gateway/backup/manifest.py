"""A snapshot's manifest: what it holds, every file's SHA-256, authenticated with an HMAC.

    seal(body, key) -> bytes                      the manifest.json a backup writes
    open_sealed(raw, snapshot, key) -> dict       the checked body; ManifestError says why not

Shape (format 2; snapshot.py writes it, restore.py and verify.py read it):

    {"format": 2, "snapshot": NAME, "created": unix time, "secret": bool,
     "registry": sha256 | null, "secret_sha256": sha256 | null, "missed": {account: why},
     "accounts": {account: {"sub": str, "files": {"collection.anki2"|"media.db": sha256},
                            "media": {file name: sha256}}},
     "mac": hex HMAC-SHA256}

The MAC covers the canonical JSON of everything else (keys sorted, no spaces, ASCII) behind a
fixed label, under `backup.manifest_key`: a key the operator keeps away from the backup store,
so whoever can write the store cannot make a snapshot the restore accepts (swap one account's
collection for another's, point a media entry elsewhere). What the MAC makes sure of is then
checked for shape before any of it names a file: account names pass naming.is_safe(), media
names are plain file names, digests are 64 lowercase hex digits (a digest is a store key,
`blobs/<digest>`). Snapshots without a MAC (taken before format 2) are refused: their files
cannot be checked (docs/operations/backups.md says how to move on from them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from gateway.naming import is_safe

FORMAT = 2
SQLITE_FILES = ("collection.anki2", "media.db")
_LABEL = b"anki-cognito-gateway snapshot manifest v2\n"
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ManifestError(Exception):
    """The manifest cannot be trusted or used; the text says why (never the key)."""


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(body: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _LABEL + _canonical(body), hashlib.sha256).hexdigest()


def seal(body: dict[str, Any], key: bytes) -> bytes:
    """The manifest file: `body` with its MAC (format 2 set here)."""
    body = {**body, "format": FORMAT}
    return json.dumps({**body, "mac": _mac(body, key)}, indent=1, sort_keys=True).encode()


def open_sealed(raw: bytes, snapshot: str, key: bytes) -> dict[str, Any]:
    """The manifest of snapshot `snapshot`, once its MAC and shape are checked."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ManifestError("its manifest is not JSON") from None
    if not isinstance(body, dict):
        raise ManifestError("its manifest is not a JSON object")
    mac = body.pop("mac", None)
    if not isinstance(mac, str) or body.get("format") != FORMAT:
        raise ManifestError(
            "its manifest is not signed (a snapshot taken before manifests were signed):"
            " its files cannot be checked; see 'Snapshots from before signed manifests' in"
            " the backup documentation"
        )
    if not hmac.compare_digest(mac.encode(), _mac(body, key).encode()):
        raise ManifestError(
            "its manifest's MAC does not match: it was changed in the store, or"
            " backup.manifest_key is not the key it was taken with"
        )
    if body.get("snapshot") != snapshot:
        raise ManifestError(f"its manifest belongs to snapshot {body.get('snapshot')!r}")
    _check_shape(body)
    return body


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def is_media_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )


def _check_shape(body: dict[str, Any]) -> None:
    """Signed is not the same as sensible: a bug or an old key must still not name a path."""
    accounts = body.get("accounts")
    if not isinstance(accounts, dict):
        raise ManifestError("its manifest has no accounts")
    for name, entry in accounts.items():
        if not is_safe(name):
            raise ManifestError(f"unsafe account name {name!r} in its manifest")
        if not isinstance(entry, dict):
            raise ManifestError(f"{name}: no entry in its manifest")
        files, media = entry.get("files"), entry.get("media")
        if not isinstance(files, dict) or not set(files) <= set(SQLITE_FILES):
            raise ManifestError(f"{name}: bad file list in its manifest")
        if not isinstance(media, dict):
            raise ManifestError(f"{name}: bad media list in its manifest")
        for filename, digest in [*files.items(), *media.items()]:
            if not is_media_name(filename):
                raise ManifestError(f"{name}: bad file name {filename!r} in its manifest")
            if not is_digest(digest):
                raise ManifestError(f"{name}: {filename!r} has no SHA-256 digest in its manifest")
    for field in ("registry", "secret_sha256"):
        if body.get(field) is not None and not is_digest(body[field]):
            raise ManifestError(f"bad {field} digest in its manifest")
