"""Which snapshots a store holds, and `--keep` retention (layout: snapshot.py).

    snapshots(store) -> list[str]        complete snapshots (with a manifest), oldest first
    prune(store, keep) -> list[str]      the snapshots deleted; ValueError when keep < 1

Pruning deletes media no kept snapshot lists, so it must not run while another backup uploads
to the same store (snapshot.py: one run per data folder; one prefix per node).
"""

from __future__ import annotations

import json

from gateway.backup.store import Store


def snapshots(store: Store) -> list[str]:
    """Complete snapshots (with a manifest), oldest first."""
    return sorted(
        key.split("/")[1]
        for key in store.keys("snapshots")
        if key.count("/") == 2 and key.endswith("/manifest.json")
    )


def prune(store: Store, keep: int) -> list[str]:
    """Keep the newest `keep` snapshots; delete the rest and media no kept snapshot uses."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    names = snapshots(store)
    doomed = names[:-keep]
    for name in doomed:
        # The manifest first: a snapshot half deleted is no longer listed as complete.
        store.delete(f"snapshots/{name}/manifest.json")
        for key in store.keys(f"snapshots/{name}"):
            store.delete(key)
    used: set[str] = set()
    for name in names[-keep:]:
        manifest = json.loads(store.read(f"snapshots/{name}/manifest.json"))
        for account in manifest["accounts"].values():
            used.update(account["media"].values())
    for key in store.keys("blobs"):
        if key.split("/")[-1] not in used:
            store.delete(key)
    return doomed
