"""The payload meter's rules, without I/O: sizes on the wire, inflated sizes, bombs."""

from __future__ import annotations

import os

import pytest
import zstandard

from gateway.payload import MIB, PayloadLimits, PayloadMeter, TooLarge


def streamed(data: bytes) -> bytes:
    """A frame without content size, as the Anki client sends it."""
    out = zstandard.ZstdCompressor(level=3).compressobj()
    return out.compress(data) + out.flush()


def feed_all(limits: PayloadLimits, body: bytes, chunk: int = 4096) -> PayloadMeter:
    meter = PayloadMeter(limits)
    for i in range(0, len(body), chunk):
        meter.feed(body[i : i + chunk])
    return meter


def test_limits_follow_the_stock_server_three_times_on_inflated_bytes():
    limits = PayloadLimits.from_megs(100)
    assert limits.max_compressed == 100 * MIB
    assert limits.max_inflated == 300 * MIB


def test_honest_bodies_pass_and_are_counted():
    data = os.urandom(2 * MIB) + b"text " * 400_000  # ~4 MB, shrinks about 2 times
    meter = feed_all(PayloadLimits.from_megs(10), streamed(data))
    assert meter.inflated == len(data)


def test_more_bytes_on_the_wire_than_the_cap_are_refused():
    body = streamed(os.urandom(2 * MIB))  # incompressible: ~2 MiB on the wire, 2 MiB inflated
    with pytest.raises(TooLarge, match="on the wire"):
        feed_all(PayloadLimits.from_megs(1), body)


def test_inflating_to_the_stock_cap_is_refused_before_the_worker_gets_there():
    limits = PayloadLimits(max_compressed=100 * MIB, max_inflated=3 * MIB, max_ratio=1e9)
    assert feed_all(limits, streamed(b"a" * (3 * MIB - 1))).inflated == 3 * MIB - 1
    with pytest.raises(TooLarge):
        feed_all(limits, streamed(b"a" * (3 * MIB)))


def test_a_bomb_is_stopped_after_its_allowance_not_its_size():
    bomb = streamed(b"\0" * (300 * MIB))  # ~10 KB on the wire
    meter = PayloadMeter(PayloadLimits.from_megs(100))
    with pytest.raises(TooLarge, match="allowance"):
        for i in range(0, len(bomb), 4096):
            meter.feed(bomb[i : i + 4096])
    allowance = meter.limits.inflated_allowance(meter.compressed)
    assert meter.inflated <= allowance + 64 * 1024 < 20 * MIB
    with pytest.raises(TooLarge):
        meter.feed(b"")  # refused for good


def test_the_allowance_grows_with_the_bytes_on_the_wire():
    limits = PayloadLimits.from_megs(100)
    assert limits.inflated_allowance(0) == 16 * MIB
    assert limits.inflated_allowance(10 * MIB) == 16 * MIB + 200 * MIB
    assert limits.inflated_allowance(100 * MIB) == 300 * MIB - 1


def test_a_body_that_is_not_zstd_is_counted_on_the_wire_only():
    meter = feed_all(PayloadLimits.from_megs(1), b"not zstd at all" * 1000)
    assert not meter.inflating and meter.compressed == 15_000
    with pytest.raises(TooLarge):
        feed_all(PayloadLimits.from_megs(1), b"x" * (MIB + 1))
