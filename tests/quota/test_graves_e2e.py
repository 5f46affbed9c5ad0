"""Deletions ("graves") while a collection is over its limit, end to end: the real `anki`
client and raw requests → the gateway (one process, or two on the same data folder) → a real
stock sync server, moto as Cognito (quota/graves.py, quota/allowance.py)."""

from __future__ import annotations

import json
import random

from anki.collection import AddNoteRequest

from gateway import protocol
from gateway.appkeys import POOL
from gateway.quota import allowance
from gateway.quota.livesize import live_bytes
from tests.quota.test_quota_e2e import MB, device, set_quota, started
from tests.test_uploads import send

META = {"v": 11, "cv": "anki,26.09.3 (29bb700b),linux"}


def test_a_real_client_deleting_thousands_of_notes_while_over_syncs_them_and_gets_under(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    big = device(tmp_path, "big", gw)
    rng = random.Random(3)
    model, deck = big.col.models.by_name("Basic"), big.col.decks.id("Default")
    requests = []
    for i in range(6000):
        note = big.col.new_note(model)
        note["Front"], note["Back"] = f"note {i}", rng.randbytes(150).hex()
        requests.append(AddNoteRequest(note=note, deck_id=deck))
    big.col.add_notes(requests)
    set_quota(gw, collection_megs=0)  # unlimited for the first upload
    big.sync(media=False)
    set_quota(gw, collection_megs=None)  # 1 MB: the collection (about 3 MB) is over it
    path = gw.config.collections_dir / "bob" / "collection.anki2"
    assert live_bytes(path) > 2 * MB

    # 5,900 notes of one card: 11,800 ids of graves, in the client's applyGraves chunks.
    kept = sorted(big.col.find_notes(""))[:100]
    big.col.remove_notes([n for n in big.col.find_notes("") if n not in kept])
    big.sync(media=False)
    assert live_bytes(path) < MB  # under: growth syncs again
    big.add_note("under the limit again")
    big.sync(media=False)
    other = device(tmp_path, "other", gw)
    other.sync(media=False)
    assert other.col.note_count() == 101
    assert "under the limit again" in other.note_fronts()
    for c in (big, other):
        c.close()


def test_the_deletion_allowance_holds_across_two_gateway_processes_and_bounds_the_growth(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, collection_megs=1)
    other = start_gateway(gw.config)  # a second process on the same data folder
    big = device(tmp_path, "big", gw, megabytes=1.5)
    set_quota(gw, collection_megs=0)
    big.sync(media=False)
    set_quota(gw, collection_megs=None)
    key = big.auth.hkey
    big.close()
    path = gw.config.collections_dir / "bob" / "collection.anki2"
    gw.call(gw.app[POOL].stop("bob"))
    before = live_bytes(path)
    assert before > MB

    def call(each, method: str, obj: object) -> tuple[int, bytes]:
        body = protocol.compress(json.dumps(obj).encode())
        return each.call(send(each.url, key, body, method))

    # One sync through both processes in turn: 50 bodies of 2,000 made-up note ids fill the
    # allowance (100,000 ids) exactly; the server commits them.
    ids = iter(random.Random(11).sample(range(10**12, 10**13), allowance.IDS + 2000))
    assert call(gw, "sync/meta", META)[0] == 200
    assert call(other, "sync/start", {"minUsn": 0, "lnewer": False, "graves": None})[0] == 200
    for i in range(allowance.IDS // 2000):
        chunk = {"cards": [], "notes": [next(ids) for _ in range(2000)], "decks": []}
        assert call((gw, other)[i % 2], "sync/applyGraves", {"chunk": chunk})[0] == 200
    changes = {"changes": {"models": [], "decks": [[], []], "tags": []}}
    assert call(gw, "sync/applyChanges", changes)[0] == 200
    assert call(other, "sync/chunk", {})[0] == 200
    assert call(gw, "sync/applyChunk", {"chunk": {"done": True}})[0] == 200
    assert call(other, "sync/finish", {})[0] == 200
    gw.call(gw.app[POOL].stop("bob"))
    grown = live_bytes(path) - before
    print(f"100,000 graves grew the live size by {grown} bytes")
    assert 0 < grown <= allowance.IDS * 32

    # The next sync, through the other process: one more id is refused (413), and its next
    # sync/meta says why; the server took nothing.
    after = live_bytes(path)
    assert call(other, "sync/meta", META)[0] == 200
    assert call(gw, "sync/start", {"minUsn": 0, "lnewer": False, "graves": None})[0] == 200
    chunk = {"cards": [], "notes": [next(ids)], "decks": []}
    assert call(other, "sync/applyGraves", {"chunk": chunk})[0] == 413
    call(gw, "sync/abort", {})
    status, answer = call(gw, "sync/meta", META)
    assert status == 200
    meta = json.loads(answer)
    assert meta["cont"] is False
    assert "sends more deletions than this server takes" in meta["msg"]
    gw.call(gw.app[POOL].stop("bob"))
    assert live_bytes(path) == after
