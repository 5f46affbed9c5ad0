"""An answer relayed from a worker to a client (gateway/web/relay.py): the worker's side never
waits on the client while the relay may spill to disk; order, failure and closing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.web.relay import Relay


async def take(relay: Relay) -> bytes:
    return b"".join([chunk async for chunk in relay.chunks()])


async def test_the_worker_side_ends_before_the_client_takes_a_byte(tmp_path):
    relay = Relay(tmp_path, memory=10, batch=8)
    parts = [bytes([n]) * 4 for n in range(8)]  # 32 bytes: past the memory, into the file
    for part in parts:
        assert await relay.put(part)
    relay.end()
    assert relay.on_disk > 0
    assert await take(relay) == b"".join(parts)  # in order across memory and file
    relay.close()


async def test_a_client_that_keeps_up_never_makes_it_spill(tmp_path):
    relay = Relay(tmp_path, memory=10)
    taken = []

    async def client() -> None:
        async for chunk in relay.chunks():
            taken.append(chunk)

    reading = asyncio.create_task(client())
    for n in range(50):
        await relay.put(bytes([n]) * 8)
        await asyncio.sleep(0)  # the client's turn
    relay.end()
    await reading
    assert b"".join(taken) == b"".join(bytes([n]) * 8 for n in range(50))
    assert relay.on_disk == 0
    relay.close()


async def test_once_the_client_caught_up_the_bytes_stay_in_memory_again(tmp_path):
    relay = Relay(tmp_path, memory=10, batch=8)
    for n in range(4):
        await relay.put(bytes([n]) * 8)  # from the second on, past the memory: to the file
    assert relay.on_disk == 24
    chunks = relay.chunks()
    assert await anext(chunks) == b"\0" * 8  # memory first: the oldest
    await relay.put(b"late")  # the client has not taken the file yet: after it (a batch)
    assert await anext(chunks) == b"\1" * 8 + b"\2" * 8 + b"\3" * 8
    assert await anext(chunks) == b"late"  # from the batch not written yet
    await relay.put(b"after")  # caught up: memory again
    relay.end()
    assert [c async for c in chunks] == [b"after"]
    assert relay.on_disk == 24
    relay.close()


async def test_a_client_behind_by_less_than_a_batch_never_makes_it_touch_the_disk(tmp_path):
    relay = Relay(tmp_path, memory=10, batch=100)
    for n in range(10):
        await relay.put(bytes([n]) * 8)  # 80 bytes: past the memory, within a batch
    relay.end()
    assert await take(relay) == b"".join(bytes([n]) * 8 for n in range(10))
    assert relay.on_disk == 0
    relay.close()


async def test_without_a_folder_the_worker_side_waits_for_the_client():
    relay = Relay(None, memory=10)
    assert await relay.put(b"12345678")
    blocked = asyncio.create_task(relay.put(b"abcdefgh"))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    chunks = relay.chunks()
    assert await anext(chunks) == b"12345678"
    assert await asyncio.wait_for(blocked, 1)
    relay.end()
    assert [c async for c in chunks] == [b"abcdefgh"]


async def test_a_failure_comes_after_the_bytes_before_it(tmp_path):
    relay = Relay(tmp_path, memory=4)
    await relay.put(b"abcdefgh")
    relay.fail(ConnectionResetError("worker gone"))
    chunks = relay.chunks()
    assert await anext(chunks) == b"abcdefgh"
    with pytest.raises(ConnectionResetError):
        await anext(chunks)
    relay.close()


async def test_after_close_the_worker_side_stops(tmp_path):
    relay = Relay(None, memory=4)
    await relay.put(b"abcd")
    blocked = asyncio.create_task(relay.put(b"efgh"))
    await asyncio.sleep(0.01)
    relay.close()  # the client went away
    assert await asyncio.wait_for(blocked, 1) is False
    assert await relay.put(b"more") is False
    assert await take(relay) == b""
