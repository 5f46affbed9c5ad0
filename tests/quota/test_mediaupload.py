"""A media upload's file sizes, read from zips as the stock client writes them, fed in pieces
of every size (quota/mediaupload.py)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from gateway.quota.mediaupload import MediaUpload, NotStock


def stock_zip(files: dict[str, bytes], deleted: tuple[str, ...] = ()) -> bytes:
    """As rslib `zip_files_for_upload`: stored entries "0", "1", ..., then `_meta`."""
    out = io.BytesIO()
    meta: list[list[str | None]] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i, (name, data) in enumerate(files.items()):
            z.writestr(str(i), data)
            meta.append([name, str(i)])
        meta += [[name, None] for name in deleted]
        z.writestr("_meta", json.dumps(meta))
    return out.getvalue()


def read(body: bytes, piece: int) -> list[tuple[str, int | None]]:
    seen: list[list[tuple[str, int | None]]] = []
    upload = MediaUpload(seen.append)
    for i in range(0, len(body), piece):
        upload.feed(body[i : i + piece])
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("piece", [1, 7, 30, 4096, 1 << 20])
def test_sizes_and_deletions_come_with_the_meta_in_any_pieces(piece):
    body = stock_zip({"a.jpg": b"x" * 1000, "ü.mp3": b"", "c.png": b"y" * 70_000}, ("gone.gif",))
    assert read(body, piece) == [
        ("a.jpg", 1000),
        ("ü.mp3", 0),
        ("c.png", 70_000),
        ("gone.gif", None),
    ]


def test_an_upload_of_deletions_only():
    assert read(stock_zip({}, ("x", "y")), 64) == [("x", None), ("y", None)]


def deflated() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("0", b"\0" * 10_000)
        z.writestr("_meta", json.dumps([["a", "0"]]))
    return out.getvalue()


def meta_only(meta: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("0", b"data")
        z.writestr("_meta", meta)
    return out.getvalue()


def no_meta() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("0", b"data")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (deflated(), "not stored"),
        (no_meta(), "no _meta"),
        (meta_only(b"{not json"), "not JSON"),
        (meta_only(b'{"a": "0"}'), "not a list"),
        (meta_only(b'[["a", 0]]'), "pairs"),
        (meta_only(b'[["a", "1"]]'), "does not hold"),
        (b"MZ" + b"\0" * 100, "not a zip entry"),
    ],
)
def test_what_a_stock_client_never_sends_is_refused(body, reason):
    upload = MediaUpload(lambda changes: None)
    with pytest.raises(NotStock, match=reason):
        upload.feed(body)
