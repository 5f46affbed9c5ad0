"""The proxy's side of the rule (syncsession/guard.py), on a real account folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import SyncConflict
from gateway.workers.syncsession import SessionGuard


@pytest.mark.parametrize("ending", ["sync/abort", "sync/finish"])
async def test_a_sync_that_ends_frees_the_account_before_its_answer_is_read(
    tmp_path: Path, ending: str
):
    # Two gateway processes: the holder's abort/finish is still being answered by one (its
    # answer streams to the client, who may already send the next request) when another
    # device's start reaches the other. Before: the lease went only once the answer was read,
    # and the start got 409 ("only one copy of Anki can sync") although the sync had ended.
    (tmp_path / "quinn").mkdir()
    here, there = SessionGuard(tmp_path, idle=60.0), SessionGuard(tmp_path, idle=60.0)
    async with here.turn("quinn", "sync/start", "s1") as turn:
        turn.status = 200
    async with here.turn("quinn", ending, "s1") as turn:
        assert turn.answer is None  # goes to the worker
        async with there.turn("quinn", "sync/start", "s2") as other:
            assert other.answer is None
            other.status = 200
        turn.status = 200
    # s2 now holds the account: s1 may not start again meanwhile.
    with pytest.raises(SyncConflict):
        async with here.turn("quinn", "sync/start", "s1"):
            pass


META = "sync/meta"


async def _held(guard: SessionGuard, method: str, session: str, inside: list[str], leave):
    """A request of `session` that stays at the worker until `leave` is set."""
    async with guard.turn("quinn", method, session) as turn:
        assert turn.answer is None
        inside.append(session)
        await leave.wait()
        turn.status = 200


async def _until(inside: list[str], count: int) -> None:
    """Until `count` requests are at the worker (AssertionError after 2 s)."""
    for _ in range(200):
        if len(inside) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(inside)} of {count} requests reached the worker: {inside}")


@pytest.mark.parametrize("processes", [1, 2])
async def test_metas_of_one_account_are_at_the_worker_together(tmp_path: Path, processes: int):
    # 16 devices' sync/meta at once (the bench's measure 3): before, they passed one at a time
    # (each waiting for the one before it to be answered), so none of these could be inside
    # while the first was held, and each gave up after `wait` (409).
    (tmp_path / "quinn").mkdir()
    guards = [SessionGuard(tmp_path, idle=60.0, wait=1.0) for _ in range(processes)]
    inside: list[str] = []
    leave = asyncio.Event()
    held = [
        asyncio.create_task(_held(guards[n % processes], META, f"s{n}", inside, leave))
        for n in range(16)
    ]
    await _until(inside, 16)
    leave.set()
    await asyncio.gather(*held)


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_meta_let_through_is_answered_before_a_start_is_decided(
    tmp_path: Path, processes: int
):
    # The turnstile's guarantee: a second device's meta decided before the first device's
    # start must not reach the worker after the start claimed the account (it would end that
    # sync). The start waits until the meta is answered; the device's next meta is refused.
    (tmp_path / "quinn").mkdir()
    guards = [SessionGuard(tmp_path, idle=60.0, wait=5.0) for _ in range(processes)]
    here, there = guards[0], guards[-1]
    inside: list[str] = []
    leave = asyncio.Event()
    meta = asyncio.create_task(_held(here, META, "second", inside, leave))
    await _until(inside, 1)
    answered = asyncio.Event()
    start = asyncio.create_task(_held(there, "sync/start", "first", inside, answered))
    await asyncio.sleep(0.2)
    assert inside == ["second"]  # the start is not decided while the meta is at the worker
    leave.set()
    await meta
    await _until(inside, 2)
    assert inside == ["second", "first"]
    answered.set()
    await start
    with pytest.raises(SyncConflict):  # the start claimed the account
        async with here.turn("quinn", META, "second"):
            pass


async def test_a_waiting_start_goes_before_metas_that_come_after_it(tmp_path: Path):
    # Within a process a start is not starved by a stream of metas: those arriving while it
    # waits pass after it, and then meet its lease (409).
    (tmp_path / "quinn").mkdir()
    guard = SessionGuard(tmp_path, idle=60.0, wait=5.0)
    inside: list[str] = []
    leave, answered = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_held(guard, META, "m1", inside, leave))
    await _until(inside, 1)
    start = asyncio.create_task(_held(guard, "sync/start", "s", inside, answered))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(_held(guard, META, "m2", inside, leave))
    await asyncio.sleep(0.05)
    assert inside == ["m1"]
    leave.set()
    await first
    await _until(inside, 2)
    assert inside == ["m1", "s"]
    answered.set()
    await start
    with pytest.raises(SyncConflict):  # decided after the start: its lease refuses it
        await late
    assert inside == ["m1", "s"]


async def test_a_start_that_waits_longer_than_wait_gets_409_and_lets_metas_pass(tmp_path: Path):
    (tmp_path / "quinn").mkdir()
    guard = SessionGuard(tmp_path, idle=60.0, wait=0.2)
    inside: list[str] = []
    leave = asyncio.Event()
    held = asyncio.create_task(_held(guard, META, "m1", inside, leave))
    await _until(inside, 1)
    with pytest.raises(SyncConflict):
        async with guard.turn("quinn", "sync/start", "s"):
            pass
    async with guard.turn("quinn", META, "m2") as turn:  # not held back by the start gone
        assert turn.answer is None
    leave.set()
    await held


async def test_the_requests_of_a_sync_in_quick_succession_write_the_lease_once(tmp_path: Path):
    # Each renewal was a write of the shared lease file (flock, JSON, write) for every request
    # of a sync, twice: before it was sent and when it was answered (rules.py: renewal_step).
    (tmp_path / "quinn").mkdir()
    guard = SessionGuard(tmp_path, idle=60.0)
    lease_file = tmp_path / "quinn" / ".gateway-sync-session"
    async with guard.turn("quinn", "sync/start", "s1") as turn:
        turn.status = 200
    written = lease_file.read_bytes()
    assert b'"s1"' in written
    before = lease_file.stat().st_mtime_ns
    for method in ("sync/applyGraves", "sync/applyChanges", "sync/chunk", "sync/applyChunk"):
        async with guard.turn("quinn", method, "s1") as turn:
            assert turn.answer is None
            turn.status = 200
    assert lease_file.read_bytes() == written
    assert lease_file.stat().st_mtime_ns == before
    async with guard.turn("quinn", "sync/finish", "s1") as turn:
        turn.status = 200
    assert lease_file.read_bytes() == b""


@pytest.mark.parametrize("session", ["\u00e9" * 900, "\U0001f600" * 900])
async def test_a_lease_of_the_longest_session_a_header_can_carry_still_holds(
    tmp_path: Path, session: str
):
    # The anki-sync header is bounded in characters (protocol.MAX_SYNC_HEADER), but the lease
    # file escapes each non-ASCII one to 6 or 12 bytes: 900 of them made a lease longer than
    # the store read back, which then read as no lease, and a second sync of the account
    # started while the first was live.
    (tmp_path / "quinn").mkdir()
    guard = SessionGuard(tmp_path, idle=60.0)
    async with guard.turn("quinn", "sync/start", session) as turn:
        turn.status = 200
    with pytest.raises(SyncConflict):
        async with guard.turn("quinn", "sync/start", "s2"):
            pass
    async with guard.turn("quinn", "sync/chunk", session) as turn:
        assert turn.answer is None
        turn.status = 200
