"""What a collection over its limit may still sync (quota/growth.py): the bodies the anki 26.9
client sent, captured on the wire, for a sync that only deletes and for a review."""

from __future__ import annotations

import json

import pytest

from gateway.quota.growth import MAX_BODY, adds

#: A sync that only deleted a note (captured): the settings come whole.
DELETION_CHANGES = (
    b'{"changes":{"models":[],"decks":[[],[]],"tags":[],"conf":{"estTimes":true,"dueCounts":'
    b'true,"sched2021":true,"nextPos":6,"creationOffset":0,"collapseTime":1200,"curDeck":1},'
    b'"crt":1796529600}}'
)
DELETION_CHUNK = b'{"chunk":{"done":true}}'
#: A review (captured, shortened): the deck's counters and the review and card rows.
REVIEW_CHANGES = (
    b'{"changes":{"models":[],"decks":[[{"id":1,"mod":1796569562,"name":"Default","usn":2}],'
    b'[]],"tags":[],"conf":{"curDeck":1},"crt":1796529600}}'
)
REVIEW_CHUNK = (
    b'{"chunk":{"done":true,"revlog":[[1796569562089,1796569561732,2,3,-600,0,0,0,0]],'
    b'"cards":[[1796569561732,1796569561732,1,0,1796569562,2,1,1,1796570166,0,0,1,0,1,0,0,0,'
    b'"{}"]]}}'
)


@pytest.mark.parametrize(
    ("method", "body", "verdict"),
    [
        ("sync/applyChanges", DELETION_CHANGES, None),
        ("sync/applyChunk", DELETION_CHUNK, None),
        ("sync/applyChanges", REVIEW_CHANGES, "decks"),
        ("sync/applyChunk", REVIEW_CHUNK, "cards, reviews"),
        (
            "sync/applyChunk",
            b'{"chunk":{"done":false,"notes":[[1]],"cards":[],"revlog":[]}}',
            "notes",
        ),
        (
            "sync/applyChanges",
            b'{"changes":{"models":[{}],"decks":[[],[]],"tags":["t"]}}',
            "note types, tags",
        ),
        ("sync/applyChanges", b'{"changes":{"decks":[[],[{"id":2}]]}}', "decks"),
        ("sync/applyGraves", b'{"chunk":{"cards":[1],"decks":[],"notes":[1]}}', None),
        ("sync/start", b'{"minUsn":1,"lnewer":true,"graves":null}', None),
        # Not the shape the client sends: counted as adding.
        ("sync/applyChunk", b"not json", "unreadable"),
        ("sync/applyChunk", b"[]", "unreadable"),
        ("sync/applyChunk", b'{"chunk":{"notes":{"a":1}}}', "unreadable"),
        ("sync/applyChanges", b'{"minUsn":0,"lnewer":true,"graves":null}', "unreadable"),
        ("sync/applyChanges", b'{"changes":{"decks":"x"}}', "unreadable"),
    ],
)
def test_a_request_adds_when_it_carries_rows_or_definitions(method, body, verdict):
    assert adds(method, body) == verdict


def test_settings_pass_only_within_the_body_limit():
    settings = {f"addon_{i}": "x" * 100 for i in range(400)}
    body = json.dumps({"changes": {"models": [], "decks": [[], []], "conf": settings}}).encode()
    assert len(body) > MAX_BODY
    assert adds("sync/applyChanges", body) == "too much"
