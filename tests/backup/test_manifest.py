"""The signed manifest: what verifies, and what is refused before it names any file."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.backup.manifest import ManifestError, open_sealed, seal

KEY = b"k" * 32
DIGEST = "ab" * 32


def body(**account: Any) -> dict[str, Any]:
    entry = {"sub": "s", "files": {"collection.anki2": DIGEST}, "media": {"a.png": DIGEST}}
    return {"snapshot": "S1", "registry": DIGEST, "accounts": {"amy": {**entry, **account}}}


def test_a_sealed_manifest_opens_with_its_key_and_name() -> None:
    opened = open_sealed(seal(body(), KEY), "S1", KEY)
    assert opened["accounts"]["amy"]["media"] == {"a.png": DIGEST} and opened["format"] == 2


@pytest.mark.parametrize(
    ("raw", "snapshot", "key", "refusal"),
    [
        (seal(body(), KEY), "S1", b"x" * 32, "MAC does not match"),
        (seal(body(), KEY), "S2", KEY, "belongs to snapshot 'S1'"),
        (json.dumps(body()).encode(), "S1", KEY, "not signed"),
        (b"[]", "S1", KEY, "not a JSON object"),
        (b"{", "S1", KEY, "not JSON"),
    ],
)
def test_a_manifest_that_does_not_verify_is_refused(raw, snapshot, key, refusal) -> None:
    with pytest.raises(ManifestError, match=refusal):
        open_sealed(raw, snapshot, key)


def test_an_edit_without_the_key_is_refused() -> None:
    edited = json.loads(seal(body(), KEY))
    edited["accounts"]["amy"]["media"]["a.png"] = "cd" * 32
    with pytest.raises(ManifestError, match="MAC does not match"):
        open_sealed(json.dumps(edited).encode(), "S1", KEY)


@pytest.mark.parametrize(
    ("changed", "refusal"),
    [
        ({"media": {"a.png": "../../../etc/hostname"}}, "'a.png' has no SHA-256 digest"),
        ({"media": {"a.png": DIGEST.upper()}}, "'a.png' has no SHA-256 digest"),
        ({"media": {"../a.png": DIGEST}}, "bad file name '../a.png'"),
        ({"media": {"..": DIGEST}}, "bad file name '..'"),
        ({"files": {"collection.anki2": DIGEST[:-1]}}, "no SHA-256 digest"),
        ({"files": {"../registry.sqlite3": DIGEST}}, "bad file list"),
        ({"media": []}, "bad media list"),
    ],
)
def test_a_signed_manifest_naming_a_path_is_refused(changed, refusal) -> None:
    with pytest.raises(ManifestError, match=refusal):
        open_sealed(seal(body(**changed), KEY), "S1", KEY)


def test_an_unsafe_account_name_is_refused() -> None:
    unsafe = body()
    unsafe["accounts"] = {"../amy": unsafe["accounts"]["amy"]}
    with pytest.raises(ManifestError, match="unsafe account name"):
        open_sealed(seal(unsafe, KEY), "S1", KEY)
