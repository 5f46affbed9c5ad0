"""Storage quotas end to end: the real `anki` client → the gateway → real stock sync servers,
moto as Cognito. Each refusal is read as Anki shows it, and the sync after it (under the limit,
or after the operator raised it) works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from anki.errors import BackendError, NetworkError

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


def test_an_account_over_its_limit_syncs_deletions_and_downloads_and_cannot_grow(
    cognito, tmp_path, start_gateway
):
    # The operator lowered the limit under what the server holds (2.5 MB, limit 1 MB). Before,
    # every sync stopped at sync/meta, deletions included, until the operator raised it.
    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    set_quota(gw, collection_megs=0)  # unlimited for the first upload
    big.sync(media=False)
    set_quota(gw, collection_megs=None)  # back to the default: 1 MB
    notes = big.col.note_count()

    # A new device: the full download is not growth.
    other = device(tmp_path, "other", gw)
    assert other.sync(media=False) == Required.FULL_DOWNLOAD
    assert other.col.note_count() == notes

    # Growth is refused: the sync that adds is cut (413, "a network error"), the next one
    # stops at sync/meta with the message; the server applied nothing.
    big.add_note("after the limit")
    with pytest.raises(NetworkError):
        big.sync(media=False)
    with pytest.raises(BackendError) as info:
        big.sync(media=False)
    message = str(info.value)
    assert message.startswith("Your collection on this server is 2.")
    assert "over its limit of 1.0 MB. Deletions still sync, but this sync also adds" in message
    other.sync(media=False)
    assert "after the limit" not in other.note_fronts()

    # Deleting notes syncs, and frees the room: the collection file keeps its size (the
    # server's live pages count).
    kept = sorted(big.col.find_notes(""))[:5]
    big.col.remove_notes([n for n in big.col.find_notes("") if n not in kept])
    big.sync(media=False)
    other.sync(media=False)
    assert other.col.note_count() == 5
    folder = gw.config.collections_dir / "bob"
    on_disk = sum(p.stat().st_size for p in folder.glob("collection.anki2*"))
    assert on_disk > MB  # still "over" by the files' size

    # Under the limit again: growth syncs.
    big.add_note("under the limit again")
    big.sync(media=False)
    other.sync(media=False)
    assert "under the limit again" in other.note_fronts()
    for c in (big, other):
        c.close()


def test_a_device_with_reviews_pending_gets_back_under_by_a_full_upload_within_the_limit(
    cognito, tmp_path, start_gateway
):
    # The way back without the operator (docs/users/quotas.md): reviews cannot sync while the
    # account is over, so the user deletes notes, runs Check Database (which compacts the
    # file) and forces a one-way sync: the upload within the limit replaces the server's copy.
    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    set_quota(gw, collection_megs=0)
    big.sync(media=False)
    set_quota(gw, collection_megs=None)
    card = big.col.sched.getCard()
    big.col.sched.answerCard(card, 3)  # a review: a revlog row and the card
    with pytest.raises(NetworkError):
        big.sync(media=False)
    with pytest.raises(BackendError, match="Deletions still sync, but this sync also adds"):
        big.sync(media=False)

    kept = sorted(big.col.find_notes(""))[:5]
    big.col.remove_notes([n for n in big.col.find_notes("") if n not in kept])
    big.col.fix_integrity()
    big.col.set_schema_modified()  # "force changes in one direction on the next sync"
    assert big.sync(media=False) == Required.FULL_SYNC  # uploaded: it has cards
    other = device(tmp_path, "other", gw)
    assert other.sync(media=False) == Required.FULL_DOWNLOAD
    assert other.col.note_count() == 5
    assert other.col.db.scalar("select count() from revlog") == 1
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

    # The operator lowers the limits under what is stored (4.2 MB, limit 2 MB): media that
    # adds is refused, deleting media syncs.
    set_quota(gw, media_file_megs=None, media_megs=None)
    extra = bob.add_media("extra.bin", os.urandom(10_000))
    with pytest.raises(BackendError, match=r"^Your media would take 4\.2 MB, over"):
        bob.sync()
    bob.col.media.trash_files([huge, extra])
    bob.sync()
    assert server_files(gw) == {name: 600_000 for name in more}
    bob.close()


def test_growth_while_over_gets_413_and_the_worker_never_sees_it(cognito, tmp_path, start_gateway):
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
    rows = {
        "sync/applyChanges": b'{"changes":{"models":[],"decks":[[{"id":9}],[]],"tags":[]}}',
        "sync/applyChunk": b'{"chunk":{"done":true,"notes":[[1]]}}',
    }
    for method, body in rows.items():
        status, _ = gw.call(send(gw.url, key, protocol.compress(body), method))
        assert status == 413
    # The next sync/meta says why, from the gateway alone.
    meta = protocol.compress(b'{"v":11,"cv":"anki,26.09.3 (29bb700b),linux"}')
    status, answer = gw.call(send(gw.url, key, meta, "sync/meta"))
    assert status == 200
    assert json.loads(answer)["cont"] is False
    assert live_worker_pids(gw.config.collections_dir) == []  # refused before any worker


def test_graves_of_notes_that_never_existed_cannot_grow_a_collection_over_its_limit(
    cognito, tmp_path, start_gateway
):
    import random

    from gateway import protocol
    from gateway.appkeys import POOL
    from gateway.quota.livesize import live_bytes
    from tests.test_uploads import send

    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw, megabytes=2.5)
    set_quota(gw, collection_megs=0)
    big.sync(media=False)
    set_quota(gw, collection_megs=None)  # 1 MB: the collection is over it
    key = big.auth.hkey
    big.close()
    path = gw.config.collections_dir / "bob" / "collection.anki2"
    gw.call(gw.app[POOL].stop("bob"))
    before = live_bytes(path)
    assert before > MB

    def call(method: str, obj: object) -> int:
        body = protocol.compress(json.dumps(obj).encode())
        status, _ = gw.call(send(gw.url, key, body, method))
        return status

    ids = random.Random(7).sample(range(10**12, 10**13), 100_000)  # no such notes
    assert call("sync/meta", {"v": 11, "cv": "anki,26.09.3 (29bb700b),linux"}) == 200
    assert call("sync/start", {"minUsn": 0, "lnewer": False, "graves": None}) == 200
    graves = call("sync/applyGraves", {"chunk": {"cards": [], "notes": ids, "decks": []}})
    if graves == 200:  # the rest of a sync that only deletes
        changes = {"changes": {"models": [], "decks": [[], []], "tags": []}}
        assert call("sync/applyChanges", changes) == 200
        assert call("sync/chunk", {}) == 200
        assert call("sync/applyChunk", {"chunk": {"done": True}}) == 200
        call("sync/finish", {})
    gw.call(gw.app[POOL].stop("bob"))
    assert live_bytes(path) <= before
