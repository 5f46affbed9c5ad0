"""Node-to-node signatures (gateway/cluster/signing.py)."""

from __future__ import annotations

import pytest

from gateway.cluster import signing

KEY = signing.node_key(b"s" * 32)
NOW = 1_700_000_000.0


def headers(**change: str) -> dict[str, str | None]:
    signed: dict[str, str | None] = dict(
        signing.sign(KEY, "POST", "/_cluster/sync/meta", "n1", "id", NOW)
    )
    signed.update(change)
    return signed


def check(h, *, method="POST", path="/_cluster/sync/meta", identity="id", now=NOW, key=KEY):
    return signing.problem(key, method, path, identity, h, now, 30)


def test_a_signed_request_passes_within_the_window():
    assert check(headers()) is None
    assert check(headers(), now=NOW + 30) is None
    assert check(headers(), method="post") is None  # methods compare upper-cased


@pytest.mark.parametrize(
    ("tweak", "reason"),
    [
        ({"h": {signing.SIGNATURE: None}}, "not signed"),
        ({"h": {signing.TIME: "12a"}}, "malformed time"),
        # Unicode digits pass str.isdigit(); int() refuses the first (a 500 and a traceback
        # for an unsigned request) and reads the second.
        ({"h": {signing.TIME: "1700000000\u00b2"}}, "malformed time"),
        ({"h": {signing.TIME: "\u0661\u0667\u0660\u0660"}}, "malformed time"),
        ({"now": NOW + 31}, "time outside the replay window"),
        ({"now": NOW - 31}, "time outside the replay window"),
        ({"method": "GET"}, "bad signature"),
        ({"path": "/_cluster/sync/upload"}, "bad signature"),
        ({"identity": "other"}, "bad signature"),
        ({"h": {signing.NODE: "n2"}}, "bad signature"),
        ({"key": signing.node_key(b"t" * 32)}, "bad signature"),
        ({"h": {signing.SIGNATURE: "é" * 64}}, "bad signature"),
    ],
)
def test_anything_else_is_refused_with_a_reason(tweak, reason):
    h = headers(**tweak.pop("h", {}))
    assert check(h, **tweak) == reason


def test_the_key_is_derived_not_the_secret_itself():
    assert signing.node_key(b"secret" * 6) != b"secret" * 6
    assert len(signing.node_key(b"x" * 32)) == 32
