"""Storage quotas end to end: the real `anki` client → the gateway → real stock sync servers,
moto as Cognito. Each refusal is read as Anki shows it, and the sync after it (under the limit,
or after the operator raised it) works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from anki.errors import BackendError

from bench import collection
from tests.ankiclient import Client, Required

PASSWORD = "Correct-Horse-9"
MB = 1_000_000


def started(cognito, tmp_path, start_gateway, **quota):
    cognito.add_user("bob", PASSWORD, "bob@example.com")
    return start_gateway(cognito.config(tmp_path / "data", quota=quota))


def device(tmp_path: Path, name: str, gw, megabytes: float = 0) -> Client:
    folder = tmp_path / "clients" / name
    if megabytes:
        collection.make(folder, megabytes=megabytes)
    client = Client(folder)
    client.login("bob", PASSWORD, gw.url)
    return client


def set_quota(gw, **megs) -> None:
    registry = gw.registry
    account = registry.get_by_name("bob")
    assert registry.set_quota(account.sub, {f"quota_{k}": v for k, v in megs.items()})


def server_files(gw) -> dict[str, int]:
    media = gw.config.collections_dir / "bob" / "media"
    return {p.name: p.stat().st_size for p in media.iterdir()} if media.exists() else {}


def test_full_upload_over_a_collection_limit_shows_anki_the_message_and_the_override_lets_it_in(
    cognito, tmp_path, start_gateway
):
    # 2.5 MB of collection, ~2 MB compressed: over 1 MB either way.
    gw = started(cognito, tmp_path, start_gateway, collection_upload_megs=0, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    notes = big.col.note_count()
    with pytest.raises(BackendError) as info:
        big.sync(media=False)
    assert str(info.value) == (
        "Your collection is larger than this server's limit of 1.0 MB. Make it smaller, then "
        "sync again."
    )
    assert big.col.note_count() == notes  # the device's collection is untouched

    # Compressed size against its own limit.
    set_quota(gw, collection_upload_megs=1, collection_megs=0)
    with pytest.raises(BackendError) as info:
        big.sync(media=False)
    assert "limit of 1.0 MB (compressed)" in str(info.value)

    other = device(tmp_path, "other", gw)
    assert other.sync(media=False) == Required.NO_CHANGES  # nothing was replaced

    # The operator gives this account room: the same upload goes through.
    set_quota(gw, collection_upload_megs=5, collection_megs=10)
    big.sync(media=False)
    other.sync(media=False)
    assert other.col.note_count() == notes
    for c in (big, other):
        c.close()


def test_a_normal_sync_of_a_collection_over_its_limit_stops_with_the_message_and_applies_nothing(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    set_quota(gw, collection_megs=0)  # unlimited for the first upload
    big.sync(media=False)
    set_quota(gw, collection_megs=None)  # back to the default: 1 MB, the server holds ~2.5
    big.add_note("after the limit")
    with pytest.raises(BackendError) as info:
        big.sync(media=False)
    message = str(info.value)
    assert message.startswith("Your collection on this server is 2.")
    assert "over its limit of 1.0 MB, so it cannot sync" in message
    other = device(tmp_path, "other", gw)
    with pytest.raises(BackendError):
        other.sync(media=False)

    set_quota(gw, collection_megs=10)
    big.sync(media=False)
    other.sync(media=False)
    assert "after the limit" in other.note_fronts()
    for c in (big, other):
        c.close()


def test_media_over_the_file_or_total_limit_shows_the_message_and_the_next_media_sync_works(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, media_megs=2, media_file_megs=1)
    bob = device(tmp_path, "bob", gw)
    bob.add_note("first")
    bob.sync(media=False)

    large = bob.add_media("large.bin", os.urandom(MB + 1))
    with pytest.raises(BackendError) as info:
        bob.sync()
    assert str(info.value) == (
        f"The media file {large!r} is 1.0 MB, over this server's limit of 1.0 MB per file. "
        "Remove it from your notes (Tools > Check Media) and sync again."
    )
    assert server_files(gw) == {}  # nothing of that upload was applied

    # The user removes it; the next media sync works.
    bob.col.media.trash_files([large])
    small = bob.add_media("small.bin", os.urandom(900_000))
    bob.sync()
    assert server_files(gw) == {small: 900_000}

    # The total: 0.9 MB held, two more of 0.6 MB would make 2.1 MB > 2 MB.
    more = [bob.add_media(f"more{i}.bin", os.urandom(600_000)) for i in range(2)]
    with pytest.raises(BackendError) as info:
        bob.sync()
    assert str(info.value) == (
        "Your media would take 2.1 MB, over this server's limit of 2.0 MB. Delete unused media "
        "(Tools > Check Media) and sync again."
    )
    assert server_files(gw) == {small: 900_000}

    # Deleting the first file makes room: the upload replaces 0.9 MB with 1.2 MB.
    bob.col.media.trash_files([small])
    bob.sync()
    assert server_files(gw) == {name: 600_000 for name in more}

    # The operator's override per account: unlimited files.
    set_quota(gw, media_file_megs=0, media_megs=0)
    huge = bob.add_media("huge.bin", os.urandom(3 * MB))
    bob.sync()
    assert server_files(gw)[huge] == 3 * MB
    bob.close()


def test_a_client_skipping_meta_gets_413_for_growth_while_over_and_the_worker_never_sees_it(
    cognito, tmp_path, start_gateway
):
    from gateway import protocol
    from gateway.appkeys import POOL
    from tests.conftest import live_worker_pids
    from tests.test_uploads import send

    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    set_quota(gw, collection_megs=0)
    big.sync(media=False)
    set_quota(gw, collection_megs=None)
    key = big.auth.hkey
    big.close()
    gw.call(gw.app[POOL].stop("bob"))
    assert live_worker_pids(gw.config.collections_dir) == []
    body = protocol.compress(b'{"minUsn":0,"lnewer":true,"graves":null}')
    for method in ("sync/start", "sync/applyChanges", "sync/applyChunk"):
        status, _ = gw.call(send(gw.url, key, body, method))
        assert status == 413
    assert live_worker_pids(gw.config.collections_dir) == []  # refused before any worker
