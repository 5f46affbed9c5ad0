"""Upload sizes end to end: the real `anki` client and raw clients → the gateway → real stock
sync servers, moto as Cognito (issue "Hostile traffic is bounded", item 1).

The stock server caps only the inflated body, at three times MAX_SYNC_PAYLOAD_MEGS, in memory
(anki-sync-protocol.md): before the gateway counted bodies, a 10 KB zstd bomb grew a worker by
about 310 MiB and four at once by about 610 MiB. Worker memory is read as VmHWM (peak RSS).
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import aiohttp
import pytest
import zstandard
from anki.errors import BackendError

from bench import collection
from gateway import protocol
from tests import rawhttp
from tests.ankiclient import Client, Required
from tests.conftest import live_worker_pids

PASSWORD = "Correct-Horse-9"
MIB = 1024 * 1024


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def bomb(prefix: int = 300_000, zeros: int = 301 * MIB) -> bytes:
    """Random bytes (so the body streams past the gateway's read-ahead), then zeros: ~0.3 MB on
    the wire, inflating past the stock server's own cap for the default 100 MB."""
    out = zstandard.ZstdCompressor(level=3).compressobj()
    return out.compress(os.urandom(prefix)) + out.compress(b"\0" * zeros) + out.flush()


async def send(
    url: str, key: str, body: bytes, path: str = "sync/upload", *, with_headers: bool = False
) -> tuple[int, bytes] | tuple[int, bytes, dict[str, str]]:
    """POSTs `body` chunked in 4 KiB pieces, as Anki does; (status, inflated answer), and the
    answer's headers if `with_headers`."""

    async def chunks():
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    header = rawhttp.sync_header(key).decode()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(url + path, data=chunks(), headers={"anki-sync": header}) as r:
            raw = await r.read()
            if r.status == 200:
                raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            if with_headers:
                return r.status, raw, dict(r.headers)
            return r.status, raw


def started(cognito, tmp_path, start_gateway, users=("bob",), **workers):
    for user in users:
        cognito.add_user(user, PASSWORD, f"{user}@example.com")
    return start_gateway(cognito.config(tmp_path / "data", workers=workers))


def worker_of(gw, key: str) -> int:
    """Starts the key's worker (a harmless meta) and returns its pid."""
    meta = protocol.compress(b'{"v":11,"cv":"test"}')
    status, _ = gw.call(send(gw.url, key, meta, "sync/meta"))
    assert status == 200
    (pid,) = live_worker_pids(gw.config.collections_dir)
    return pid


def client(tmp_path: Path, name: str, gw, megabytes: float = 0) -> Client:
    """A logged-in device, with a collection of `megabytes` of random text if > 0."""
    folder = tmp_path / "clients" / name
    if megabytes:
        collection.make(folder, megabytes=megabytes)
    device = Client(folder)
    device.login("bob", PASSWORD, gw.url)
    return device


def test_upload_over_the_cap_on_the_wire_gets_the_stock_answer_and_is_never_applied(
    cognito, tmp_path, start_gateway
):
    # 1 MB cap: a 2.5 MB collection of random text is ~2 MB on the wire, but inflates to less
    # than the stock server's 3 MB, so the stock server alone would take it.
    gw = started(cognito, tmp_path, start_gateway, max_payload_megs=1)
    big = client(tmp_path, "big", gw, megabytes=2.5)
    with pytest.raises(BackendError) as info:
        big.sync(media=False)
    assert "collection exceeds size limit" in str(info.value)  # what Anki shows

    other = client(tmp_path, "other", gw)
    assert other.sync(media=False) == Required.NO_CHANGES  # the server kept its empty one
    assert other.col.note_count() == 0
    for c in (big, other):
        c.close()


def test_zstd_bomb_is_refused_like_an_oversized_upload_with_bounded_worker_memory(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    pid = worker_of(gw, key)
    before = peak_mib(pid)
    status, answer = gw.call(send(gw.url, key, bomb()))
    assert (status, answer) == (200, b"collection exceeds size limit")
    grown = peak_mib(pid) - before
    assert grown < 40, f"worker grew by {grown:.0f} MiB"  # 16 MiB + 20 x 0.3 MB allowed
    assert worker_of(gw, key) == pid  # the same worker serves on


def test_four_concurrent_bombs_cost_the_worker_a_bounded_amount(cognito, tmp_path, start_gateway):
    gw = started(cognito, tmp_path, start_gateway)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    pid = worker_of(gw, key)
    before = peak_mib(pid)
    body = bomb()

    async def four():
        return await asyncio.gather(*(send(gw.url, key, body) for _ in range(4)))

    answers = gw.call(four())
    # Past 16 MiB a body needs one of the budget's places for large bodies (two by default),
    # and one account gets one of them at a time: the others are told to try again
    # (budget.py).
    too_large, busy = (
        (200, b"collection exceeds size limit"),
        (503, b"server busy, try again later"),
    )
    assert answers.count(too_large) >= 1 and set(answers) <= {too_large, busy}, answers
    grown = peak_mib(pid) - before
    assert grown < 4 * 40, f"worker grew by {grown:.0f} MiB"


def test_bomb_on_another_method_is_413_and_the_connection_stays_usable(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    pid = worker_of(gw, key)
    before = peak_mib(pid)
    # No sync is open for this session, so the sync-session rule alone would answer 503 ("try
    # again"); the body's own verdict comes first: it is true whatever the account's state.
    status, answer = gw.call(send(gw.url, key, bomb(), "sync/applyChanges"))
    assert (status, answer) == (413, b"request body too large")
    assert peak_mib(pid) - before < 40
    assert worker_of(gw, key) == pid  # the same worker serves on


def test_honest_large_upload_through_the_real_client_still_works(cognito, tmp_path, start_gateway):
    # 8 MB of random text (~6 MB on the wire) under a 10 MB cap: comfortably inside every rule.
    gw = started(cognito, tmp_path, start_gateway, max_payload_megs=10)
    up = client(tmp_path, "up", gw, megabytes=8)
    assert up.sync(media=False) == Required.FULL_UPLOAD
    down = client(tmp_path, "down", gw)
    assert down.sync(media=False) == Required.FULL_DOWNLOAD
    assert down.col.note_count() == up.col.note_count()
    for c in (up, down):
        c.close()


def test_concurrent_bodies_together_never_inflate_past_the_budget(cognito, tmp_path, start_gateway):
    # Twelve bodies inflating to 10 MiB, each paused after three quarters so that all are in
    # the worker at once: without a budget the worker holds all of them (measured: +148 MiB).
    # 4 MiB cap: a budget of 16 MiB is one slot for a body inflating to 12 MiB, and a pool of 4.
    gw = started(cognito, tmp_path, start_gateway, max_payload_megs=4, max_inflated_megs=16)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    pid = worker_of(gw, key)
    before = peak_mib(pid)
    text = bytes(random.Random(1).choices(b"abcd", k=10 * MIB))  # ~2.6 MiB on the wire
    body = zstandard.ZstdCompressor(level=1).compress(text)
    header = rawhttp.sync_header(key).decode()

    async def one(session: aiohttp.ClientSession) -> int:
        async def chunks():
            pause = len(body) * 3 // 4
            for i in range(0, len(body), 65536):
                if i <= pause < i + 65536:
                    await asyncio.sleep(1.0)
                yield body[i : i + 65536]

        url = gw.url + "sync/upload"
        async with session.post(url, data=chunks(), headers={"anki-sync": header}) as r:
            answer = await r.read()
            if r.status == 200:  # the stock server's verdict on these bytes, not the gateway's
                answer = zstandard.ZstdDecompressor().decompressobj().decompress(answer)
                assert answer.startswith(b"Your upload was corrupt"), answer
            return r.status

    async def twelve():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session) for _ in range(12)))

    statuses = gw.call(twelve())
    # The first body past the pool takes the one place; the others past it are refused. A body
    # still held up behind the worker (it reads one upload at a time, and its socket buffers
    # fill) may take the place once the first has ended: that one is alone in the worker too.
    assert statuses.count(200) >= 1 and statuses.count(503) >= 6, statuses
    assert set(statuses) == {200, 503}, statuses
    grown = peak_mib(pid) - before
    assert grown < 40, f"worker grew by {grown:.0f} MiB"
    assert worker_of(gw, key) == pid


def test_a_refused_body_still_arriving_holds_none_of_the_budget(cognito, tmp_path, start_gateway):
    # One place for a large body (4 MiB cap, budget 16): a bomb takes it, is refused, and then
    # keeps sending for two seconds; an honest large body meanwhile must get the place.
    gw = started(cognito, tmp_path, start_gateway, max_payload_megs=4, max_inflated_megs=16)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    worker_of(gw, key)
    bomb_body = bomb(prefix=100_000, zeros=13 * MIB)
    honest = zstandard.ZstdCompressor(level=1).compress(
        bytes(random.Random(2).choices(b"abcd", k=10 * MIB))
    )
    header = {"anki-sync": rawhttp.sync_header(key).decode()}
    url = gw.url + "sync/upload"

    async def slow_bomb():
        for i in range(0, len(bomb_body), 65536):
            yield bomb_body[i : i + 65536]
        for _ in range(40):  # the rest of an oversized body, still coming
            await asyncio.sleep(0.05)
            yield b"x" * 4096

    async def both():
        async with aiohttp.ClientSession() as session:

            async def post(data, delay=0.0):
                await asyncio.sleep(delay)
                async with session.post(url, data=data, headers=header) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(post(slow_bomb()), post(honest, delay=0.5))

    assert gw.call(both()) == [200, 200]  # "too large" for the bomb, the worker's for the other
