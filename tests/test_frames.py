"""Which zstd bodies pass: one modern frame as stock clients send it, nothing else (issue 16,
item 2). Frames are built by hand where no library writes them (legacy, skippable)."""

from __future__ import annotations

import os

import pytest
import zstandard

from gateway.uploads.frames import FrameScanner, Unreadable
from tests.bombs import v07_rle_bomb


def scan(body: bytes, step: int = 0) -> FrameScanner:
    scanner = FrameScanner()
    step = step or len(body) or 1
    for i in range(0, len(body), step):
        scanner.feed(body[i : i + step])
    return scanner


def streamed(data: bytes, level: int = 3, **kwargs) -> bytes:
    """As rslib's encoder writes a body: no content size, level 3 (2 MiB window)."""
    out = zstandard.ZstdCompressor(level=level, **kwargs).compressobj()
    return out.compress(data) + out.flush()


def with_window(window_log: int) -> bytes:
    """A streamed frame declaring a window of 2**window_log bytes."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    out = zstandard.ZstdCompressor(compression_params=params).compressobj()
    return out.compress(b"x" * 1000) + out.flush()


@pytest.mark.parametrize("step", [1, 3, 4096, 0])
@pytest.mark.parametrize(
    "data", [b"", b'{"v":11,"cv":"anki,26.09.3"}', os.urandom(300_000), b"a" * 1_000_000]
)
def test_one_modern_frame_passes_in_pieces_of_any_size(data, step):
    assert scan(streamed(data), step).ended


@pytest.mark.parametrize(
    "kwargs", [{"write_checksum": True}, {"write_content_size": True}, {"level": 19}]
)
def test_frame_header_variants_a_library_writes_pass(kwargs):
    body = zstandard.ZstdCompressor(**kwargs).compress(os.urandom(1000) + b"x" * 100_000)
    assert scan(body, 7).ended


@pytest.mark.parametrize(
    "body",
    [with_window(21), with_window(23), streamed(b"x" * 1000, level=19)],
)
def test_windows_up_to_8_mib_pass(body):
    # The stock client declares 2 MiB (level 3); up to 8 MiB passes (frames.py, MAX_WINDOW).
    assert scan(body).ended


def test_a_body_that_ends_inside_its_frame_is_not_refused_here():
    body = streamed(os.urandom(200_000))
    assert not scan(body[:-10]).ended  # the worker cannot decode it either


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (v07_rle_bomb(), r"legacy zstd frame \(v0.7\)"),  # the bomb: 299 MiB
        ((0xFD2FB525).to_bytes(4, "little") + b"\0" * 20, r"legacy zstd frame \(v0.5\)"),
        ((0xFD2FB51E).to_bytes(4, "little") + b"\0" * 20, r"legacy zstd frame \(v0.1\)"),
        ((0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"abcd", "skippable"),
        ((0x184D2A5F).to_bytes(4, "little") + b"\0" * 8, "skippable"),
        (b"not zstd at all", "not a zstd frame"),
        (streamed(b"one") + streamed(b"two"), "after the end"),
        (streamed(b"one") + b"\0", "after the end"),
        (
            streamed(b"one") + (0x184D2A50).to_bytes(4, "little") + bytes(4),
            "after the end",
        ),
        (streamed(b"one") + v07_rle_bomb(10), "after the end"),
        # Frame header descriptor: a dictionary id, the reserved bit.
        (b"\x28\xb5\x2f\xfd\x01\x00\x00", "dictionary"),
        (b"\x28\xb5\x2f\xfd\x08\x00", "reserved bit"),
        # A window of 2^31 bytes (exponent 21), past libzstd's default limit.
        (b"\x28\xb5\x2f\xfd\x00\xa8", "window"),
        # Windows past 8 MiB: 9 MiB, 128 MiB (libzstd's limit, as a library writes it), and a
        # single-segment frame whose content size (its window) is 8 MiB + 1.
        (b"\x28\xb5\x2f\xfd\x00\x69", "window of 9437184 bytes"),
        (with_window(27), "window of 134217728 bytes"),
        (b"\x28\xb5\x2f\xfd\xa0" + (8 * 1024 * 1024 + 1).to_bytes(4, "little"), "window"),
        # A block of the reserved type (3), and a block larger than 128 KiB.
        (b"\x28\xb5\x2f\xfd\x00\x00" + (3 << 1).to_bytes(3, "little"), "reserved type"),
        (b"\x28\xb5\x2f\xfd\x00\x58" + ((200_000 << 3) | 0).to_bytes(3, "little"), "block of"),
    ],
)
def test_everything_else_is_refused(body, reason):
    with pytest.raises(Unreadable, match=reason):
        scan(body)
    with pytest.raises(Unreadable, match=reason):
        scan(body, 1)  # whatever the chunking


def test_the_refusal_comes_before_the_frame_is_read_past_its_magic():
    scanner = FrameScanner()
    with pytest.raises(Unreadable):
        scanner.feed(v07_rle_bomb()[:5])
