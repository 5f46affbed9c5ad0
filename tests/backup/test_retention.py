"""--keep retention on S3 (moto) and in a folder: pruning one snapshot leaves every other whole,
and only manifests signed with the manifest key steer what is deleted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from gateway.backup.manifest import seal
from gateway.backup.retention import prune, snapshots
from gateway.backup.store import LocalStore, S3Store, Store

KEY = b"k" * 32


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def body(name: str, blob: str) -> dict:
    return {
        "snapshot": name,
        "created": 0,
        "registry": None,
        "secret": False,
        "secret_sha256": None,
        "missed": {},
        "accounts": {"al": {"sub": "s", "files": {}, "media": {"a.jpg": blob}}},
    }


def _snapshot(store: Store, name: str, blob: str, *, manifest: bytes | None = None) -> None:
    """A snapshot of account `al` with one media file `blob`; its manifest signed with KEY
    unless `manifest` is given."""
    store.write(f"blobs/{blob}", b"media")
    store.write(f"snapshots/{name}/accounts/al/collection.anki2", b"collection")
    raw = manifest if manifest is not None else seal(body(name, blob), KEY)
    store.write(f"snapshots/{name}/manifest.json", raw)


@pytest.fixture(params=["s3", "folder"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "folder":
        yield LocalStore(tmp_path / "backups")
        return
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="backups")
        yield S3Store("backups", "gw1", client=s3)


def test_pruning_a_snapshot_whose_name_begins_another_ones_leaves_that_one_whole(store) -> None:
    # Names an earlier version gave two backups in one second: the second one's name begins
    # with the first one's.
    b1, b2 = digest("b1"), digest("b2")
    _snapshot(store, "20261130T020000Z", b1)
    _snapshot(store, "20261130T020000Z-2", b2)
    pruned = prune(store, 1, KEY)
    assert (pruned.deleted, pruned.untrusted) == (["20261130T020000Z"], {})
    assert snapshots(store) == ["20261130T020000Z-2"]
    assert store.keys("snapshots/20261130T020000Z-2") == [
        "snapshots/20261130T020000Z-2/accounts/al/collection.anki2",
        "snapshots/20261130T020000Z-2/manifest.json",
    ]
    assert store.keys("blobs") == [f"blobs/{b2}"]
    assert store.sizes("blobs") == {f"blobs/{b2}": len(b"media")}  # what a restore stages


FORGERIES = {
    # Written by someone who can write the store but has no key.
    "unsigned": lambda name, blob: json.dumps(body(name, blob)).encode(),
    "another key": lambda name, blob: seal(body(name, blob), b"x" * 32),
    "edited": lambda name, blob: seal(body(name, blob), KEY).replace(b'"al"', b'"bo"'),
    "not JSON": lambda name, blob: b"\x00garbage",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_newest_manifest_neither_pushes_real_snapshots_out_nor_frees_media(
    store, forgery
) -> None:
    old, real, forged = "20261201T000000Z", "20261202T000000Z", "20261299T000000Z"
    b_old, b_real = digest("old"), digest("real")
    _snapshot(store, old, b_old)
    _snapshot(store, real, b_real)
    # The forged "newest" snapshot lists neither real blob: trusted, --keep 1 would delete the
    # real newest snapshot and both blobs.
    _snapshot(store, forged, digest("f"), manifest=FORGERIES[forgery](forged, digest("f")))

    pruned = prune(store, 1, KEY)

    assert pruned.deleted == [old]  # the oldest verified one only
    assert list(pruned.untrusted) == [forged]
    assert snapshots(store) == [real, forged]  # the forged one left alone, reported
    assert store.keys(f"snapshots/{real}") == [
        f"snapshots/{real}/accounts/al/collection.anki2",
        f"snapshots/{real}/manifest.json",
    ]
    # No media deleted while a manifest that does not verify is there: not even the old one's.
    assert sorted(store.keys("blobs")) == sorted(f"blobs/{d}" for d in (b_old, b_real, digest("f")))

    # Once the operator removed it, pruning deletes the media no kept snapshot uses.
    for stored in store.keys(f"snapshots/{forged}"):
        store.delete(stored)
    assert prune(store, 1, KEY).untrusted == {}
    assert store.keys("blobs") == [f"blobs/{b_real}"]


def test_a_real_manifest_replaced_by_a_forged_one_is_not_deleted_on_its_word(store) -> None:
    old, real = "20261201T000000Z", "20261202T000000Z"
    b_old, b_real = digest("old"), digest("real")
    _snapshot(store, old, b_old)
    _snapshot(store, real, b_real)
    # The newest snapshot's manifest swapped for one naming the old snapshot's media only.
    store.write(f"snapshots/{real}/manifest.json", json.dumps(body(real, b_old)).encode())
    pruned = prune(store, 1, KEY)
    assert pruned.deleted == []  # the old one is now the newest verified: kept
    assert "not signed" in pruned.untrusted[real]
    assert snapshots(store) == [old, real]
    assert sorted(store.keys("blobs")) == sorted([f"blobs/{b_old}", f"blobs/{b_real}"])


def test_keep_must_be_at_least_one(store) -> None:
    with pytest.raises(ValueError):
        prune(store, 0, KEY)
