"""--keep retention on S3 (moto) and in a folder: pruning one snapshot leaves every other whole."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from gateway.backup.retention import prune, snapshots
from gateway.backup.store import LocalStore, S3Store, Store


def _snapshot(store: Store, name: str, blob: str) -> None:
    store.write(f"blobs/{blob}", b"media")
    store.write(f"snapshots/{name}/accounts/al/collection.anki2", b"collection")
    manifest = {"snapshot": name, "accounts": {"al": {"media": {"a.jpg": blob}}}}
    store.write(f"snapshots/{name}/manifest.json", json.dumps(manifest).encode())


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
    _snapshot(store, "20261130T020000Z", "b1")
    _snapshot(store, "20261130T020000Z-2", "b2")
    assert prune(store, 1) == ["20261130T020000Z"]
    assert snapshots(store) == ["20261130T020000Z-2"]
    assert store.keys("snapshots/20261130T020000Z-2") == [
        "snapshots/20261130T020000Z-2/accounts/al/collection.anki2",
        "snapshots/20261130T020000Z-2/manifest.json",
    ]
    assert store.keys("blobs") == ["blobs/b2"]
