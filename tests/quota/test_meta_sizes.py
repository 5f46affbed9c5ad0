"""A media upload's file sizes, as the meter's zip check hands them to the quota check
(uploads/mediazip.py `on_meta`), from zips as the stock client writes them, in any pieces."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from gateway.uploads.mediazip import MediaZipCheck


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
    upload = MediaZipCheck(seen.append)
    for i in range(0, len(body), piece):
        upload.feed(body[i : i + piece])
    upload.finish()
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
