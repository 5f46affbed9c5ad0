"""Hostile bodies from issue 16, built by hand where no library writes them. Imports nothing of
the gateway, so the tests that use them run against any version of it."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import zstandard

MIB = 1024 * 1024


def v07_rle_bomb(blocks: int = 2392) -> bytes:
    """A zstd v0.7 (legacy) frame of compressed blocks whose literals are RLE: each 8 bytes
    inflate to 128 KiB in a decoder built with the legacy formats (the worker's, and the zstd
    command's); 2,392 blocks are 19 KB and inflate to 299 MiB (issue 16, item 2)."""
    header = (0xFD2FB527).to_bytes(4, "little") + bytes([0x00, 0x38])  # window 2^17
    # Literals: RLE, 3-byte header, 128 KiB of byte 0; then no sequences (RFC 8878's v0.7
    # ancestor, lib/legacy/zstd_v07.c).
    content = bytes([0xF2, 0x00, 0x00, 0x00, 0x00])
    block = len(content).to_bytes(3, "big") + content  # type 0 (compressed), size 5
    return header + block * blocks + bytes([0xC0, 0x00, 0x00])  # end block


def zip_bomb() -> bytes:
    """Issue 16, item 1: one deflated entry of 100 MiB of zeros, named 24 times by `_meta`,
    in zstd: 331 bytes on the wire."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("0", b"\0" * (100 * MIB), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("_meta", json.dumps([[f"a{i}.png", "0"] for i in range(24)]))
    return zstandard.ZstdCompressor(level=19).compress(out.getvalue())


def _local(name: bytes, method: int, crc: int, size: int, csize: int | None = None) -> bytes:
    csize = size if csize is None else csize
    fixed = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, csize, size, len(name), 0
    )
    return fixed + name


def _central(name: bytes, method: int, crc: int, size: int, offset: int, csize: int) -> bytes:
    fixed = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        *(b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, csize, size, len(name)),
        *(0, 0, 0, 0, 0, offset),
    )
    return fixed + name


def _end(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    fields = (b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment))
    return struct.pack("<4sHHHHIIH", *fields) + comment


def _stored(name: bytes, data: bytes, offset: int) -> tuple[bytes, bytes]:
    """A stored entry at `offset`: its local header and data, and its central record."""
    crc = zlib.crc32(data)
    return _local(name, 0, crc, len(data)) + data, _central(
        name, 0, crc, len(data), offset, len(data)
    )


def hidden_zip_bomb(zeros: int = 100 * MIB, names: int = 24) -> bytes:
    """A media zip that is two zips. The one read from the front (local entries, central
    directory, end record) is as a stock client writes it: a stored entry "0" and `_meta`
    naming it once. Its end record's comment is a second end record, which a reader that
    searches for the end record from the back (the stock server's zip crate) takes instead. It
    points to a central directory hidden in entry "0"'s stored data, listing a *deflated* entry
    of `zeros` zero bytes and a `_meta` naming it `names` times. In zstd: 373 bytes."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = squeeze.compress(b"\0" * zeros) + squeeze.flush()
    crc = zlib.crc32(b"\0" * zeros)
    base = 30 + 1  # entry "0"'s data starts after its local header
    big = _local(b"big", 8, crc, zeros, len(deflated)) + deflated
    meta = json.dumps([[f"a{i}.png", "big"] for i in range(names)]).encode()
    hidden_meta, meta_record = _stored(b"_meta", meta, base + len(big))
    cd = _central(b"big", 8, crc, zeros, base, len(deflated)) + meta_record
    hidden = _end(2, len(cd), base + len(big) + len(hidden_meta))
    first, first_record = _stored(b"0", big + hidden_meta + cd, 0)
    second, second_record = _stored(b"_meta", json.dumps([["x.png", "0"]]).encode(), len(first))
    real_cd = first_record + second_record
    body = first + second + real_cd + _end(2, len(real_cd), len(first) + len(second), hidden)
    return zstandard.ZstdCompressor(level=19).compress(body)
