"""The lease file and the turnstile, as two gateway processes on one data folder see them
(two stores: flock locks belong to open files, so they exclude each other as processes do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.workers.lock import NoAccountFolder
from gateway.workers.syncsession.rules import Lease
from gateway.workers.syncsession.store import FILE_NAME, LeaseStore, TurnstileBusy


@pytest.fixture(autouse=True)
def folder(tmp_path: Path) -> None:
    """The account's folder, as its first login makes it."""
    (tmp_path / "acct").mkdir()


async def test_an_account_without_a_folder_here_gets_503_and_no_folder(tmp_path: Path):
    """Issue 21: after a move the lease stays behind with the folder; neither the lease nor
    the turnstile puts a folder back (a sync of the account gets 503 and tries again)."""
    store = LeaseStore(tmp_path)
    with pytest.raises(NoAccountFolder) as caught:
        store.update("gone", lambda old: (old, old))
    assert caught.value.status == 503
    with pytest.raises(NoAccountFolder):
        async with store.turnstile("gone", wait=1):
            pass
    assert not (tmp_path / "gone").exists()


def test_a_lease_written_by_one_store_is_read_by_another(tmp_path: Path):
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    one.update("acct", lambda old: (old, Lease("s1", 123.5)))
    seen = two.update("acct", lambda old: (old, old))
    assert seen == Lease("s1", 123.5)
    assert two.update("acct", lambda old: (old, None)) == Lease("s1", 123.5)
    assert one.update("acct", lambda old: (old, old)) is None


@pytest.mark.parametrize("raw", [b"garbage", b'{"session": 1, "expires": 2}', b"[]", b"null"])
def test_an_unreadable_lease_counts_as_none(tmp_path: Path, raw: bytes):
    store = LeaseStore(tmp_path)
    store.update("acct", lambda old: (None, None))
    (tmp_path / "acct" / FILE_NAME).write_bytes(raw)
    assert store.update("acct", lambda old: (old, old)) is None


def test_an_unsafe_account_name_is_refused(tmp_path: Path):
    with pytest.raises(ValueError):
        LeaseStore(tmp_path).update("../x", lambda old: (old, old))
    with pytest.raises(ValueError):
        LeaseStore(tmp_path).clear("../x")


def test_clear_drops_the_lease_and_creates_no_folder(tmp_path: Path):
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    one.update("acct", lambda old: (None, Lease("s1", 123.5)))
    two.clear("acct")
    assert one.update("acct", lambda old: (old, old)) is None
    two.clear("moved-away")  # its folder went to another node: it stays gone
    assert not (tmp_path / "moved-away").exists()


async def test_the_turnstile_lets_one_request_through_at_a_time(tmp_path: Path):
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    async with one.turnstile("acct", wait=1):
        with pytest.raises(TurnstileBusy):
            async with two.turnstile("acct", wait=0.1):
                pass
    async with two.turnstile("acct", wait=0.1):
        pass  # free again once the first is done


async def test_a_waiting_request_gets_its_turn_when_the_first_ends(tmp_path: Path):
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    order: list[str] = []

    async def first() -> None:
        async with one.turnstile("acct", wait=1):
            order.append("first in")
            await asyncio.sleep(0.1)
            order.append("first out")

    async def second() -> None:
        await asyncio.sleep(0.02)
        async with two.turnstile("acct", wait=1):
            order.append("second in")

    await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]


def test_a_request_in_flight_makes_the_account_busy_for_every_process(tmp_path: Path):
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    assert not two.busy("acct")
    with one.in_flight("acct"), one.in_flight("acct"):
        assert two.busy("acct")
    assert not two.busy("acct")


async def test_a_folder_moved_away_after_its_check_gets_503_and_stays_away(tmp_path: Path):
    """The folder is checked in full once; a move after that (cluster/move.py renames it) is
    seen by the files' own opens: 503, and nothing is created where the folder was."""
    store = LeaseStore(tmp_path)
    store.update("acct", lambda old: (None, Lease("s1", 123.5)))
    (tmp_path / "acct").rename(tmp_path / ".moved-acct-1")
    with pytest.raises(NoAccountFolder):
        store.update("acct", lambda old: (old, old))
    with pytest.raises(NoAccountFolder):
        async with store.turnstile("acct", wait=1, shared=True):
            pass
    with pytest.raises(NoAccountFolder):
        store.busy("acct")
    assert not (tmp_path / "acct").exists()
    (tmp_path / ".moved-acct-1").rename(tmp_path / "acct")  # moved back: served again
    assert store.update("acct", lambda old: (old, old)) == Lease("s1", 123.5)


async def test_a_symlink_put_in_place_of_a_forgotten_folder_is_refused(tmp_path: Path):
    store = LeaseStore(tmp_path)
    store.update("acct", lambda old: (None, None))
    store.forget("acct")  # its worker stopped
    (tmp_path / "acct").rename(tmp_path / "elsewhere")
    (tmp_path / "acct").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError):
        store.update("acct", lambda old: (old, old))


async def test_drops_wait_for_another_processes_start_and_then_pass_together(tmp_path: Path):
    """A drop tries the shared flock at once; while another process's start holds it, drops
    of this process queue behind one another and all pass once it ends, or give up."""
    one, two = LeaseStore(tmp_path), LeaseStore(tmp_path)
    order: list[str] = []

    async def start() -> None:
        async with one.turnstile("acct", wait=1):
            order.append("start in")
            await asyncio.sleep(0.1)
            order.append("start out")

    async def drop(name: str) -> None:
        await asyncio.sleep(0.02)
        async with two.turnstile("acct", wait=1, shared=True):
            order.append(name)
            await asyncio.sleep(0.02)

    await asyncio.gather(start(), drop("meta 1"), drop("meta 2"))
    assert order[:2] == ["start in", "start out"]
    assert sorted(order[2:]) == ["meta 1", "meta 2"]
    async with one.turnstile("acct", wait=1):
        with pytest.raises(TurnstileBusy):
            async with two.turnstile("acct", wait=0.05, shared=True):
                pass
    async with two.turnstile("acct", wait=0.1, shared=True):
        async with two.turnstile("acct", wait=0.1, shared=True):
            pass  # free again: drops of one process share the flock


async def test_drops_woken_by_a_start_leaving_still_keep_a_start_arriving_meanwhile_out(
    tmp_path: Path,
):
    # Drops of this process wait for its start; when it leaves they are woken, but run only
    # on a later turn of the event loop. Before: nothing counted them meanwhile, the account's
    # in-process gate went as idle, and a start arriving in that window made a fresh one, took
    # the flock (the same open file: flock converts its lock, it does not refuse it) and was
    # at the worker together with the woken drop.
    store = LeaseStore(tmp_path)
    inside: list[str] = []
    leave = asyncio.Event()

    async def drop() -> None:
        async with store.turnstile("acct", wait=1, shared=True):
            inside.append("meta")
            await leave.wait()
            inside.remove("meta")

    async with store.turnstile("acct", wait=1):
        waiting = asyncio.create_task(drop())
        await asyncio.sleep(0.02)  # the drop waits behind this start
    # Nothing awaited since the first start left: the woken drop has not run yet.
    async with store.turnstile("acct", wait=1):
        await asyncio.sleep(0.05)
        assert inside == []  # the drop is not at the worker during this start
    leave.set()
    await waiting


async def test_drops_woken_by_a_start_leaving_keep_their_flock_while_any_is_in(tmp_path: Path):
    # The same window, a drop arriving in it: before, it made a fresh in-process gate and the
    # woken drop another, both on the one open file; the first to leave unlocked the file
    # under the other, and another process's start passed while that drop was at the worker.
    here, there = LeaseStore(tmp_path), LeaseStore(tmp_path)
    leave = asyncio.Event()
    entered = asyncio.Event()

    async def drop() -> None:
        async with here.turnstile("acct", wait=1, shared=True):
            entered.set()
            await leave.wait()

    async with here.turnstile("acct", wait=1):
        waiting = asyncio.create_task(drop())
        await asyncio.sleep(0.02)
    async with here.turnstile("acct", wait=1, shared=True):
        await entered.wait()  # the woken drop is in
    with pytest.raises(TurnstileBusy):  # it still is: another process's start must wait
        async with there.turnstile("acct", wait=0.05):
            pass
    leave.set()
    await waiting
