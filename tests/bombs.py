"""Hostile bodies from issue 16, built by hand where no library writes them. Imports nothing of
the gateway, so the tests that use them run against any version of it."""

from __future__ import annotations

import io
import json
import zipfile

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
