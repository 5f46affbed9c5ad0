"""Counting graves (quota/graves.py) and the deletion allowance (quota/allowance.py), on real
files: each `GraveAllowance` below opens the file on its own, as another process would."""

from __future__ import annotations

import json
import threading

import pytest

from gateway.quota.allowance import FILE_NAME, IDS, MAX_BYTES, GraveAllowance, State
from gateway.quota.graves import MAX_BODY, count

#: What the anki 26.9 client sent deleting notes (tests/quota/test_graves_e2e.py): start with
#: no graves, then applyGraves of at most 250 ids (3,543 bytes inflated).
CLIENT_START = b'{"minUsn":0,"lnewer":false,"graves":null}'


def chunk(notes: list[int], cards: tuple[int, ...] = (), decks: tuple[int, ...] = ()) -> bytes:
    return json.dumps(
        {"chunk": {"cards": list(cards), "notes": notes, "decks": list(decks)}}
    ).encode()


@pytest.mark.parametrize(
    ("method", "body", "ids"),
    [
        ("sync/start", CLIENT_START, 0),
        ("sync/start", b'{"minUsn":0,"lnewer":false}', 0),
        ("sync/start", b'{"graves":{"cards":[1,2],"notes":[3],"decks":[]}}', 3),
        ("sync/applyGraves", chunk([1, 2, 3], [4, 5], [6]), 6),
        ("sync/applyGraves", b'{"chunk":{"notes":[1]}}', 1),  # kinds left out: none
        ("sync/applyGraves", b'{"chunk":null}', None),
        ("sync/applyGraves", b"{}", None),
        ("sync/applyGraves", b'{"chunk":{"notes":["1"]}}', None),
        ("sync/applyGraves", b'{"chunk":{"notes":[true]}}', None),
        ("sync/applyGraves", b'{"chunk":{"notes":{"a":1}}}', None),
        ("sync/applyGraves", b'{"chunk":[1]}', None),
        ("sync/applyGraves", b"not json", None),
        ("sync/applyGraves", b"[]", None),
        ("sync/start", b'{"graves":[1]}', None),
        ("sync/meta", b"{}", None),
    ],
)
def test_count(method, body, ids):
    assert count(method, body) == ids


def test_a_client_chunk_of_250_ids_fits_max_body():
    assert len(chunk([10**13 - i for i in range(250)])) < MAX_BODY // 8


def test_a_stretch_holds_ids_up_to_the_allowance_and_starts_again_only_below_its_floor():
    state = State()
    assert state.spend(IDS - 10, live=5000)
    assert not state.spend(11, live=6000)  # nothing counted
    assert state.spend(10, live=6000)  # grown by the graves: the same stretch
    assert not state.spend(1, live=5000)  # back to the floor: not below it
    assert state.spend(IDS, live=4999)  # deletions that existed shrank it: a new stretch
    assert (state.spent, state.floor) == (IDS, 4999)
    assert not State().spend(IDS + 1, live=1)


def test_two_processes_share_one_allowance(tmp_path):
    one, two = GraveAllowance(tmp_path), GraveAllowance(tmp_path)
    assert one.spend(IDS - 1, live=1000)
    assert not two.spend(2, live=1000)
    assert two.spend(1, live=1000)
    assert not one.spend(1, live=1000)
    two.clear()  # under the limit again
    assert not (tmp_path / FILE_NAME).exists()
    assert one.spend(IDS, live=1000)


def test_spends_at_once_from_threads_never_pass_the_allowance(tmp_path):
    passed = []

    def spend():
        for _ in range(50):
            if GraveAllowance(tmp_path).spend(IDS // 200, live=1000):
                passed.append(1)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 200
    assert json.loads((tmp_path / FILE_NAME).read_bytes()) == {"spent": IDS, "floor": 1000}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b'{"spent":1}',
        b'{"spent":"x","floor":1}',
        b'{"spent":1,"floor":-1}',
        b'{"spent":1e400,"floor":1}',
        b"x" * (MAX_BYTES + 10),
    ],
)
def test_an_unreadable_file_is_a_new_stretch_and_is_rewritten(tmp_path, raw):
    (tmp_path / FILE_NAME).write_bytes(raw)
    assert GraveAllowance(tmp_path).spend(IDS, live=7)
    assert json.loads((tmp_path / FILE_NAME).read_bytes()) == {"spent": IDS, "floor": 7}


def test_a_shorter_state_is_padded_not_cut(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b'{"spent": 100000, "floor": 123456789}')
    assert GraveAllowance(tmp_path).spend(1, live=5)
    raw = (tmp_path / FILE_NAME).read_bytes()
    assert len(raw) == 37 and json.loads(raw) == {"spent": 1, "floor": 5}


def test_no_account_folder_keeps_nothing(tmp_path):
    assert GraveAllowance(tmp_path / "gone").spend(IDS, live=1)
    assert not (tmp_path / "gone").exists()
