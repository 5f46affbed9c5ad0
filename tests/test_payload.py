"""The payload meter's rules, without I/O: sizes on the wire, inflated sizes, bombs."""

from __future__ import annotations

import os
import random
import time
import zipfile

import pytest
import zstandard

from gateway.uploads.decoders import DecoderPool
from gateway.uploads.payload import (
    INLINE_OUT,
    MIB,
    InflationBudget,
    OverBudget,
    PayloadLimits,
    PayloadMeter,
    Refused,
    TooLarge,
    Unreadable,
)


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


def test_a_body_that_is_not_zstd_is_refused_not_counted_on_the_wire_only():
    # It used to be counted by its compressed bytes only: what the meter cannot read, it
    # cannot count (issue 16, item 2).
    with pytest.raises(Unreadable, match="not a zstd frame"):
        feed_all(PayloadLimits.from_megs(1), b"not zstd at all" * 1000)


def text(size: int) -> bytes:
    """Low-entropy text: shrinks about four times, like an honest body."""
    return bytes(random.Random(size).choices(b"abcd", k=size))


def test_bodies_in_flight_share_one_budget_and_give_it_back():
    # 4 MiB cap: one slot of 12 MiB for a large body, a pool of 4 MiB for small ones.
    limits = PayloadLimits.from_megs(4)
    budget = InflationBudget(16 * MIB, limits.max_inflated)
    assert (budget.slots, budget.pool) == (1, 4 * MIB)
    body = streamed(text(5 * MIB))
    first, second = PayloadMeter(limits, budget), PayloadMeter(limits, budget)
    for i in range(0, len(body), 65536):
        first.feed(body[i : i + 65536])  # past the pool: takes the slot
    assert (budget.slots_held, budget.pool_held) == (1, 0)
    with pytest.raises(OverBudget):
        for i in range(0, len(body), 65536):
            second.feed(body[i : i + 65536])
    assert budget.pool_held <= budget.pool
    first.release()
    second.release()
    first.release()  # idempotent
    assert (budget.slots_held, budget.pool_held) == (0, 0)
    third = PayloadMeter(limits, budget)
    for i in range(0, len(body), 65536):
        third.feed(body[i : i + 65536])  # room again


def test_concurrent_large_bodies_do_not_starve_each_other():
    # All growing in step: the first past the pool keeps its slot and finishes.
    limits = PayloadLimits.from_megs(4)
    budget = InflationBudget(16 * MIB, limits.max_inflated)
    body = streamed(text(10 * MIB))
    meters = [PayloadMeter(limits, budget) for _ in range(6)]
    refused = set()
    for i in range(0, len(body), 65536):
        for n, meter in enumerate(meters):
            if n not in refused:
                try:
                    meter.feed(body[i : i + 65536])
                except OverBudget:
                    refused.add(n)
    assert len(refused) == 5
    finished = [m for n, m in enumerate(meters) if n not in refused]
    assert finished[0].inflated == 10 * MIB
    assert budget.pool_held <= budget.pool and budget.slots_held == 1


def test_one_owner_cannot_hold_more_than_one_small_share_and_one_place():
    # Defaults: 100 MiB cap, 1 GiB budget: 2 places and a pool of 424 MiB. Found by trying:
    # 29 slow bodies from one account on one address held all of it, and everyone got 503.
    limits = PayloadLimits.from_megs(100)
    budget = InflationBudget(1024 * MIB, limits.max_inflated)
    body = streamed(text(15 * MIB))  # under SMALL: a pool share each
    owners = ("account:mallory", "address:198.51.100.7")
    mine = [PayloadMeter(limits, budget, owners) for _ in range(3)]
    for i in range(0, len(body), 65536):
        mine[0].feed(body[i : i + 65536])
    assert budget.slots_held == 0
    big = streamed(text(20 * MIB))
    for i in range(0, len(big), 65536):
        mine[1].feed(big[i : i + 65536])  # the owner's pool share is used up: one place
    assert budget.slots_held == 1
    with pytest.raises(OverBudget):
        for i in range(0, len(body), 65536):
            mine[2].feed(body[i : i + 65536])  # neither pool nor a second place for them
    # Another account from another address still gets room at once.
    other = PayloadMeter(limits, budget, ("account:alice", "address:203.0.113.9"))
    for i in range(0, len(body), 65536):
        other.feed(body[i : i + 65536])
    for meter in [*mine, other]:
        meter.release()
    assert (budget.slots_held, budget.pool_held) == (0, 0)
    assert budget._pooled_by == {} and budget._slots_by == {}


def test_a_refused_body_frees_its_decoder_at_once():
    limits = PayloadLimits.from_megs(1)
    meter = PayloadMeter(limits)
    with pytest.raises(TooLarge):
        meter.feed(streamed(bytes(64 * MIB)))
    assert meter._inflater is None and not meter.inflating


def test_meters_one_after_another_share_one_decoder_and_still_count_right():
    decoders = DecoderPool()
    limits = PayloadLimits.from_megs(100)
    first = PayloadMeter(limits, decoders=decoders)
    first.feed(streamed(b"meta " * 10))
    first.release()
    assert len(decoders) == 1
    second = PayloadMeter(limits, decoders=decoders)
    assert len(decoders) == 0  # taken: no other body can use it meanwhile
    second.feed(streamed(b"changes " * 1000))
    assert second.inflated == 8000
    second.release()
    # A bomb on a reused decoder is stopped as on a new one.
    bomb = streamed(b"\0" * (300 * MIB))
    third = PayloadMeter(limits, decoders=decoders)
    with pytest.raises(TooLarge, match="allowance"):
        for i in range(0, len(bomb), 4096):
            third.feed(bomb[i : i + 4096])
    third.release()
    assert len(decoders) == 0  # a refused body's decoder is dropped, not kept


def test_concurrent_meters_never_share_a_decoder():
    decoders = DecoderPool()
    decoders.give(decoders.take(), 0)  # one idle decoder: only one of the two may have it
    limits = PayloadLimits.from_megs(100)
    a, b = PayloadMeter(limits, decoders=decoders), PayloadMeter(limits, decoders=decoders)
    body_a, body_b = streamed(b"a" * 100_000), streamed(b"b" * 100_000)
    for i in range(0, max(len(body_a), len(body_b)), 7):  # interleaved, as bodies arrive
        a.feed(body_a[i : i + 7])
        b.feed(body_b[i : i + 7])
    assert (a.inflated, b.inflated, a.inflating, b.inflating) == (100_000, 100_000, True, True)
    a.release()
    b.release()
    assert len(decoders) == 2


def test_a_body_that_is_not_zstd_drops_its_decoder():
    decoders = DecoderPool()
    meter = PayloadMeter(PayloadLimits.from_megs(1), decoders=decoders)
    with pytest.raises(Unreadable):
        meter.feed(b"not zstd at all")
    meter.release()
    assert len(decoders) == 0


def test_many_small_bodies_from_one_address_in_flight_at_once_all_get_room():
    # Devices behind one NAT address sync at once: each body in flight holds a little of the
    # address's 16 MiB share, not a whole MiB (the 17th got 503 before).
    limits = PayloadLimits.from_megs(100)
    budget = InflationBudget(1024 * MIB, limits.max_inflated)
    meters = [
        PayloadMeter(limits, budget, (f"account:dev{n}", "address:192.0.2.1")) for n in range(200)
    ]
    for meter in meters:
        meter.feed(streamed(b'{"v":11,"cv":"anki,26.09.3"}'))  # sync/meta: about 40 bytes
    assert budget.pool_held == 0  # small bodies ride in their accounts' lanes (budget.py)
    # The address's share of the pool still ends at 16 MiB: a slow stranger there cannot hold
    # more with bodies past the lane.
    more = [PayloadMeter(limits, budget, (f"account:x{n}", "address:192.0.2.1")) for n in range(9)]
    body = streamed(text(6 * MIB))  # past the lane (4 MiB)
    with pytest.raises(OverBudget):
        for meter in more:
            meter.feed(body)
    assert budget._pooled_by["address:192.0.2.1"] <= 16 * MIB
    for meter in meters + more:
        meter.release()
    assert (budget.slots_held, budget.pool_held) == (0, 0)
    assert budget._lane_by == {}


def test_small_bodies_are_counted_inline_and_big_ones_start_over_for_a_thread():
    limits = PayloadLimits.from_megs(100)
    meta = PayloadMeter(limits)
    assert meta.feed_inline(streamed(b'{"v":11,"cv":"anki,26.09.3"}'))
    # A small body that inflates past INLINE_OUT: the caller's thread stops there, and the
    # thread's feed() counts the whole body again from its first byte.
    body = streamed(text(3 * MIB))
    first, second = body[:1000], body[1000:]
    meter = PayloadMeter(limits)
    assert meter.feed_inline(first) is True or meter.inflated <= INLINE_OUT
    if not meter.feed_inline(second):
        meter.feed(second)
    assert meter.inflated == 3 * MIB
    assert not meter.feed_inline(b"")  # once in the thread, always in the thread


def test_a_bomb_costs_the_callers_thread_at_most_inline_out():
    bomb = streamed(b"\0" * (300 * MIB))  # ~10 KB on the wire: within INLINE_BYTES
    meter = PayloadMeter(PayloadLimits.from_megs(100))
    assert not meter.feed_inline(bomb)
    assert meter.inflated == 0  # started over: nothing decided inline
    with pytest.raises(TooLarge, match="allowance"):
        meter.feed(bomb)


def test_a_media_upload_is_checked_as_it_inflates():
    from tests.test_mediazip import HONEST, media_zip

    limits = PayloadLimits.from_megs(100)
    ok = PayloadMeter(limits, media_zip=True)
    ok.feed(streamed(HONEST))
    bomb = media_zip(
        [("a0.png", b"\0" * (100 * MIB))],
        method=zipfile.ZIP_DEFLATED,
        meta=[[f"a{i}.png", "0"] for i in range(24)],
    )
    body = streamed(bomb)
    assert len(body) < 1000  # the 331 bytes on the wire
    with pytest.raises(Refused, match="not stored"):
        PayloadMeter(limits, media_zip=True).feed(body)
    with pytest.raises(Refused, match="ends early"):
        PayloadMeter(limits, media_zip=True).feed(streamed(HONEST[:-30]))


def test_thirty_accounts_holding_12_mib_bodies_cannot_refuse_anyone_a_normal_sync():
    # Issue 16, item 4, at the default sizes: 30 accounts, each from its own address, each
    # with a body inflating to 12 MiB that then trickles, filled the pool, and every other
    # user's sync/meta got 503.
    limits = PayloadLimits.from_megs(100)
    budget = InflationBudget(1024 * MIB, limits.max_inflated)
    body = streamed(b"\0" * (12 * MIB))
    held, refused = [], 0
    for n in range(30):
        meter = PayloadMeter(limits, budget, (f"account:m{n}", f"address:198.51.100.{n}"))
        held.append(meter)
        try:
            meter.feed(body)
        except OverBudget:
            refused += 1  # a hostile account degrades only itself
    assert refused > 0 and budget.slots_held == budget.slots
    meta, chunk = streamed(b'{"v":11,"cv":"anki,26.09.3"}'), streamed(text(512 * 1024))
    for n in range(50):  # everyone else's normal syncs: meta, chunks of a few hundred KiB
        meter = PayloadMeter(limits, budget, (f"account:u{n}", f"address:203.0.113.{n}"))
        meter.feed(meta)
        other = PayloadMeter(limits, budget, (f"account:u{n}", f"address:203.0.113.{n}"))
        other.feed(chunk)
        meter.release()
        other.release()
    for meter in held:
        meter.release()
    assert (budget.slots_held, budget.pool_held, budget._lane_by) == (0, 0, {})


def test_a_released_meter_grants_nothing_more():
    # A request cancelled while its chunk inflates in a thread: release() comes first.
    limits = PayloadLimits.from_megs(4)
    budget = InflationBudget(16 * MIB, limits.max_inflated)
    meter = PayloadMeter(limits, budget, ("account:a",))
    meter.release()
    with pytest.raises(TooLarge):
        meter.feed(streamed(text(2 * MIB)))
    assert (budget.slots_held, budget.pool_held) == (0, 0)


def resident_mib() -> float:
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def test_a_body_in_flight_costs_the_gateway_little_whatever_window_it_declares():
    # Measured: +120 MiB of the gateway's resident memory for this 6 MiB body (window 128 MiB);
    # +0 with the stock client's 2 MiB window. Two such bodies (the two places): +240 MiB.
    # Now a window past 8 MiB is refused (frames.py) before anything is inflated.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=27)
    encoder = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = encoder.compress(os.urandom(6 * MIB)) + encoder.compress(bytes(114 * MIB))
    body += encoder.flush()
    before = resident_mib()
    meter = PayloadMeter(PayloadLimits.from_megs(100))
    try:
        for i in range(0, len(body), 65536):
            meter.feed(body[i : i + 65536])
        grown = resident_mib() - before  # the body is whole and in flight: its worker works
    except Unreadable:
        grown = 0.0  # refused: costs nothing more
    finally:
        meter.release()
    assert grown < 16, f"the gateway grew by {grown:.0f} MiB for one body"


def empty_blocks(wire: int) -> bytes:
    """One modern zstd frame of `wire` bytes made of empty raw blocks (3 bytes each, nothing
    inflated): no stock encoder writes this."""
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0x00, 0x38])  # a 2 MiB window
    return header + bytes(3) * (wire // 3) + (1).to_bytes(3, "little")  # then the last block


def test_a_body_of_empty_blocks_is_refused_before_it_costs_the_gateway_seconds():
    # Each block costs the frame scanner (pure Python, holding the GIL) about 1.6 µs: measured
    # 5.5 s per 10 MiB, and two such 30 MiB bodies from two accounts raised another user's
    # sync/meta from 8 ms to 83-94 ms (p50; max 440 ms) for 39 s, at 1.5 MiB/s on the wire.
    body = empty_blocks(10 * MIB)
    started = time.process_time()
    with pytest.raises(Unreadable, match="blocks"):
        feed_all(PayloadLimits.from_megs(100), body, chunk=65536)
    assert time.process_time() - started < 0.5


def test_blocks_as_an_encoder_writes_them_pass_even_flushed_often():
    # The stock client writes full blocks of 128 KiB; a client flushing after every 200 bytes
    # (tests' trickles) still passes for long.
    encoder = zstandard.ZstdCompressor(level=3).compressobj()
    body = b"".join(
        encoder.compress(os.urandom(200)) + encoder.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        for _ in range(1000)
    )
    assert feed_all(PayloadLimits.from_megs(100), body + encoder.flush()).inflated == 200_000
