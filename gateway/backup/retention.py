"""Which snapshots a store holds, and `--keep` retention (layout: snapshot.py).

    snapshots(store) -> list[str]              complete snapshots (with a manifest), oldest first
    prune(store, keep, key) -> Pruned          ValueError when keep < 1
        Pruned.deleted: the snapshots deleted, oldest first
        Pruned.untrusted: {snapshot: why} for manifests that do not verify under `key`
        (left alone; while there is one, no media is deleted)

Pruning acts only on manifests it has verified (manifest.open_sealed: the HMAC under
`backup.manifest_key`, the snapshot name, the shape). Whoever can write the store but lacks the
key must not steer what pruning deletes, so a manifest that does not verify (forged, edited,
unsigned from before format 2, or signed with another key) is:
- never deleted, nor its snapshot's files: it is reported and left for the operator;
- never counted among the `keep` newest: a forged "newest" snapshot cannot push a real one out;
- never read for which media it uses: instead no media is deleted at all while one is in the
  store (a forged list cannot make pruning delete media, or choose which it keeps; a real
  snapshot under an old key keeps its media until the operator decides). Verified snapshots
  are still pruned meanwhile.

Pruning deletes media no kept snapshot uses, so it must not run while another backup uploads
to the same store (snapshot.py: one run per data folder; one prefix per node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.backup.manifest import ManifestError, open_sealed
from gateway.backup.store import Store


def snapshots(store: Store) -> list[str]:
    """Complete snapshots (with a manifest), oldest first."""
    return sorted(
        key.split("/")[1]
        for key in store.keys("snapshots")
        if key.count("/") == 2 and key.endswith("/manifest.json")
    )


@dataclass(frozen=True)
class Pruned:
    deleted: list[str] = field(default_factory=list)
    #: Snapshots whose manifest does not verify, and why: left alone (module doc).
    untrusted: dict[str, str] = field(default_factory=dict)


def _verified(store: Store, name: str, key: bytes) -> dict[str, Any] | str:
    """The snapshot's checked manifest, or why it cannot be trusted."""
    try:
        raw = store.read(f"snapshots/{name}/manifest.json")
    except Exception as exc:  # noqa: BLE001 - a folder's OSError or S3's ClientError alike
        return f"its manifest cannot be read ({type(exc).__name__})"
    try:
        return open_sealed(raw, name, key)
    except ManifestError as exc:
        return str(exc)


def prune(store: Store, keep: int, key: bytes) -> Pruned:
    """Keep the newest `keep` verified snapshots; delete the older verified ones, and media no
    kept snapshot uses (module doc: what a manifest that does not verify changes)."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    trusted: dict[str, dict[str, Any]] = {}
    untrusted: dict[str, str] = {}
    for name in snapshots(store):
        manifest = _verified(store, name, key)
        if isinstance(manifest, str):
            untrusted[name] = manifest
        else:
            trusted[name] = manifest
    names = sorted(trusted)
    doomed = names[:-keep]
    for name in doomed:
        # The manifest first: a snapshot half deleted is no longer listed as complete.
        store.delete(f"snapshots/{name}/manifest.json")
        for stored in store.keys(f"snapshots/{name}"):
            store.delete(stored)
    if not untrusted:
        used: set[str] = set()
        for name in names[-keep:]:
            for account in trusted[name]["accounts"].values():
                used.update(account["media"].values())
        for stored in store.keys("blobs"):
            if stored.split("/")[-1] not in used:
                store.delete(stored)
    return Pruned(doomed, untrusted)
