"""The worker pool against the real stock sync server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.config import Config, WorkersConfig
from gateway.errors import Unavailable, WorkerFailed, WorkerTimeout
from gateway.metrics import REGISTRY
from gateway.workers.lock import try_lock
from gateway.workers.pool import RETRY_AFTER, Worker, WorkerPool
from gateway.workers.process import WorkerKilledStarting, probe_health
from tests.conftest import live_worker_pids
from tests.workers.conftest import (
    ACCOUNTS,
    STOCK,
    environ_of,
    gone,
    host_key,
    login,
    read_secret,
    secret_for,
)


def pid_on(collections_dir: Path, port: int) -> int:
    """The worker process serving `port` (from its environment)."""
    pids = [p for p in live_worker_pids(collections_dir) if environ_of(p)["SYNC_PORT"] == str(port)]
    assert len(pids) == 1
    return pids[0]


async def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def test_worker_base_url():
    assert Worker("alice", 1234).base_url == "http://127.0.0.1:1234/"


async def test_from_config_uses_the_workers_section_and_the_collections_folder(
    tmp_path, collections_dir
):
    config = Config(
        data_dir=tmp_path, workers=WorkersConfig(max_workers=1, queue_timeout_seconds=0.2)
    )
    pool = WorkerPool.from_config(config, read_secret)
    assert collections_dir == config.collections_dir
    try:
        assert pool.stats()["max"] == 1
        async with pool.lease("alice") as worker:
            assert (await login(worker.port, "alice", secret_for("alice")))[0] == 200
            with pytest.raises(Unavailable):
                async with pool.lease("bob"):
                    pass
        assert (collections_dir / "alice" / "media.db").is_file()
    finally:
        await pool.close()


async def test_lease_starts_a_worker_that_accepts_its_account(make_pool, collections_dir):
    pool = await make_pool()
    async with pool.lease("alice") as worker:
        assert worker.account == "alice"
        assert worker.base_url == f"http://127.0.0.1:{worker.port}/"
        assert await probe_health(worker.port)
        status, key = await login(worker.port, "alice", secret_for("alice"))
        assert (status, key) == (200, host_key("alice", secret_for("alice")))
        assert (await login(worker.port, "alice", "not-the-secret"))[0] == 403
        assert pool.stats() == {"live": 1, "busy": 1, "starting": 0, "max": 50}
    assert pool.stats() == {"live": 1, "busy": 0, "starting": 0, "max": 50}
    async with pool.lease("alice") as again:
        assert again.port == worker.port  # reused, not restarted
    assert len(live_worker_pids(collections_dir)) == 1


async def test_two_accounts_get_two_processes_and_two_folders(make_pool, collections_dir):
    pool = await make_pool()
    async with pool.lease("alice") as a, pool.lease("bob") as b:
        assert a.port != b.port
        assert (await login(b.port, "bob", secret_for("bob")))[0] == 200
        assert (await login(a.port, "bob", secret_for("bob")))[0] == 403
        assert len(live_worker_pids(collections_dir)) == 2
    assert (collections_dir / "alice" / "media.db").is_file()
    assert (collections_dir / "bob" / "media.db").is_file()


async def test_concurrent_leases_for_one_account_start_one_process(make_pool, collections_dir):
    pool = await make_pool()
    seen: list[int] = []

    async def use() -> None:
        async with pool.lease("alice") as worker:
            seen.append(worker.port)
            await asyncio.sleep(0.05)

    await asyncio.gather(*(use() for _ in range(10)))
    assert len(set(seen)) == 1
    assert len(live_worker_pids(collections_dir)) == 1
    assert pool.stats()["live"] == 1


async def test_idle_worker_is_reaped_but_a_busy_one_is_not(make_pool, collections_dir):
    pool = await make_pool(idle_timeout=0.3)
    async with pool.lease("busy") as busy:
        async with pool.lease("idle"):
            pass
        assert await wait_until(lambda: len(live_worker_pids(collections_dir)) == 1, 3)
        await asyncio.sleep(0.5)  # more than the timeout, still in flight
        assert await probe_health(busy.port)
        assert pool.stats()["live"] == 1
    assert await wait_until(lambda: pool.stats()["live"] == 0, 3)
    assert live_worker_pids(collections_dir) == []


async def test_reaping_follows_the_injected_clock(make_pool, collections_dir):
    now = [1000.0]
    pool = await make_pool(idle_timeout=0.2, clock=lambda: now[0])
    async with pool.lease("alice"):
        pass
    await asyncio.sleep(0.5)  # several reaper periods of real time, but no clock time
    assert pool.stats()["live"] == 1
    now[0] += 0.3
    assert await wait_until(lambda: pool.stats()["live"] == 0, 3)
    assert live_worker_pids(collections_dir) == []


async def test_full_pool_evicts_the_least_recently_used_idle_worker(make_pool, collections_dir):
    pool = await make_pool(max_workers=2)
    async with pool.lease("old") as old:
        pass
    async with pool.lease("recent") as recent:
        pass
    old_pid, recent_pid = pid_on(collections_dir, old.port), pid_on(collections_dir, recent.port)
    async with pool.lease("new") as new:
        assert (await login(new.port, "new", secret_for("new")))[0] == 200
        assert gone(old_pid)
        assert not gone(recent_pid)
        assert len(live_worker_pids(collections_dir)) == 2
        assert pool.stats()["live"] == 2


async def test_all_busy_past_queue_timeout_is_unavailable_with_retry_after(
    make_pool, collections_dir
):
    pool = await make_pool(max_workers=1, queue_timeout=0.3)
    async with pool.lease("alice"):
        began = time.monotonic()
        with pytest.raises(Unavailable) as info:
            async with pool.lease("bob"):
                pass
        assert 0.3 <= time.monotonic() - began < 2
        assert info.value.status == 503
        assert info.value.retry_after == RETRY_AFTER
    assert len(live_worker_pids(collections_dir)) == 1
    assert not (collections_dir / "bob" / "media.db").exists()  # no worker of bob's ran


async def test_queued_lease_gets_the_slot_when_a_worker_turns_idle(make_pool, collections_dir):
    pool = await make_pool(max_workers=1, queue_timeout=5)
    release = asyncio.Event()

    async def hold() -> None:
        async with pool.lease("alice"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: pool.stats()["busy"] == 1)
    waiter = asyncio.create_task(pool.lease("bob").__aenter__())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    release.set()
    await holder
    worker = await asyncio.wait_for(waiter, 5)
    assert worker.account == "bob"
    assert (await login(worker.port, "bob", secret_for("bob")))[0] == 200
    assert len(live_worker_pids(collections_dir)) == 1


async def test_killed_worker_is_replaced_on_the_next_lease(make_pool, collections_dir):
    pool = await make_pool()
    async with pool.lease("alice") as first:
        pass
    pid = pid_on(collections_dir, first.port)
    os.kill(pid, signal.SIGKILL)
    assert await wait_until(lambda: gone(pid))
    await asyncio.sleep(0.05)  # the loop learns of the exit
    async with pool.lease("alice") as second:
        assert (await login(second.port, "alice", secret_for("alice")))[0] == 200
        assert pid_on(collections_dir, second.port) != pid
    assert len(live_worker_pids(collections_dir)) == 1


async def test_report_broken_replaces_a_dead_worker(make_pool, collections_dir):
    pool = await make_pool()
    async with pool.lease("alice") as first:
        pid = pid_on(collections_dir, first.port)
        os.kill(pid, signal.SIGKILL)
        await pool.report_broken("alice")  # at once, before the reaper could notice
    async with pool.lease("alice") as second:
        assert await probe_health(second.port)
        assert pid_on(collections_dir, second.port) != pid


async def test_report_broken_keeps_a_healthy_worker(make_pool, collections_dir):
    pool = await make_pool()
    async with pool.lease("alice") as first:
        await pool.report_broken("alice")
    await pool.report_broken("nobody")  # unknown accounts are ignored
    async with pool.lease("alice") as second:
        assert second.port == first.port
    assert len(live_worker_pids(collections_dir)) == 1


async def test_two_pools_on_one_folder_never_run_two_workers_for_one_account(
    make_pool, collections_dir
):
    one, two = await make_pool(), await make_pool()
    seen: list[int] = []

    async def use(pool: WorkerPool) -> None:
        async with pool.lease("alice") as worker:
            seen.append(worker.port)
            assert len(live_worker_pids(collections_dir)) == 1

    await asyncio.gather(*(use(p) for p in (one, two, one, two, two, one)))
    assert len(set(seen)) == 1
    assert len(live_worker_pids(collections_dir)) == 1
    assert one.stats()["live"] + two.stats()["live"] == 1

    # The owner goes away (a gateway shuts down): the other one takes over.
    owner, other = (one, two) if one.stats()["live"] else (two, one)
    await owner.close()
    async with other.lease("alice") as worker:
        assert (await login(worker.port, "alice", secret_for("alice")))[0] == 200
    assert len(live_worker_pids(collections_dir)) == 1
    assert other.stats()["live"] == 1


async def test_worker_environment_has_no_gateway_secrets(monkeypatch, make_pool, collections_dir):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-pool-do-not-leak")
    pool = await make_pool()
    async with pool.lease("alice") as worker:
        env = environ_of(pid_on(collections_dir, worker.port))
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["SYNC_BASE"] == str(collections_dir)
    assert env["SYNC_USER1"] == f"alice:{secret_for('alice')}"


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x\0"])
async def test_unsafe_account_names_are_refused(make_pool, collections_dir, name):
    pool = await make_pool()
    with pytest.raises(ValueError):
        async with pool.lease(name):
            pass
    assert live_worker_pids(collections_dir) == []
    assert sorted(p.name for p in collections_dir.iterdir()) == list(ACCOUNTS)


async def test_close_stops_every_worker_and_is_idempotent(make_pool, collections_dir):
    pool = await make_pool()
    for account in ("a1", "a2", "a3"):
        async with pool.lease(account):
            pass
    assert len(live_worker_pids(collections_dir)) == 3
    began = time.monotonic()
    await pool.close()
    assert time.monotonic() - began < 2  # concurrently, and SIGINT is enough
    assert live_worker_pids(collections_dir) == []
    assert pool.stats()["live"] == 0
    await pool.close()
    with pytest.raises(Unavailable):
        async with pool.lease("a1"):
            pass
    lock = try_lock(collections_dir, "a1")  # released
    assert lock is not None
    lock.release()


async def test_close_during_a_start_leaves_no_process(make_pool, collections_dir):
    pool = await make_pool(command=("sleep", "60"), start_timeout=30)
    lease = asyncio.create_task(pool.lease("alice").__aenter__())
    assert await wait_until(lambda: len(live_worker_pids(collections_dir)) == 1)
    await pool.close()
    with pytest.raises(Unavailable):
        await lease
    assert live_worker_pids(collections_dir) == []


async def test_failed_start_is_worker_failed_and_the_next_lease_tries_again(
    make_pool, collections_dir
):
    pool = await make_pool(command=("sh", "-c", "exit 7"))
    for _ in range(2):
        with pytest.raises(WorkerFailed):
            async with pool.lease("alice"):
                pass
    assert pool.stats() == {"live": 0, "busy": 0, "starting": 0, "max": 50}
    lock = try_lock(collections_dir, "alice")
    assert lock is not None
    lock.release()


async def test_never_ready_is_worker_timeout_and_no_process_is_left(make_pool, collections_dir):
    pool = await make_pool(command=("sleep", "60"), start_timeout=0.4)
    began = time.monotonic()
    with pytest.raises(WorkerTimeout):
        async with pool.lease("alice"):
            pass
    assert time.monotonic() - began < 2
    assert live_worker_pids(collections_dir) == []
    assert pool.stats()["live"] == 0


def test_stock_command_is_the_configs_default():
    assert Config().worker_command() == STOCK


async def test_retire_all_stops_every_worker_and_frees_their_locks(make_pool, collections_dir):
    pool = await make_pool()
    for account in ("f1", "f2"):
        async with pool.lease(account):
            pass
    assert len(live_worker_pids(collections_dir)) == 2
    pool.retire_all("this node lost its leases")  # a fenced cluster node (gateway/cluster/)
    for account in ("f1", "f2"):
        await pool.stop(account)  # nothing left to retire: waits for the stop under way
    assert live_worker_pids(collections_dir) == []
    for account in ("f1", "f2"):
        lock = try_lock(collections_dir, account)
        assert lock is not None
        lock.release()
    async with pool.lease("f1"):  # the pool still serves afterwards
        pass


async def test_another_pools_worker_is_asked_for_health_once_a_second_not_per_lease(
    make_pool, collections_dir, monkeypatch
):
    from gateway.workers import lock as lock_mod
    from gateway.workers import pool as pool_mod

    probes: list[int] = []
    real = lock_mod.probe_health

    async def counted(port: int, timeout: float) -> bool:
        probes.append(port)
        return await real(port, timeout)

    monkeypatch.setattr(lock_mod, "probe_health", counted)
    owner, borrower = await make_pool(), await make_pool()
    async with owner.lease("alice") as worker:
        pass
    for _ in range(5):
        async with borrower.lease("alice") as borrowed:
            assert borrowed.port == worker.port
    assert probes == [worker.port]  # the first lease asked; the next four trusted it
    await borrower.report_broken("alice")  # a failed request: ask again next time
    async with borrower.lease("alice"):
        pass
    assert len(probes) == 2
    monkeypatch.setattr(pool_mod, "BORROW_SECONDS", 0.0)  # trust ran out: every lease asks
    for _ in range(2):
        async with borrower.lease("alice"):
            pass
    assert len(probes) == 4
    assert borrower.stats()["live"] == 0 and owner.stats()["live"] == 1


async def test_a_borrowed_worker_replaced_within_the_trust_is_not_used_and_borrowing_needs_no_room(
    make_pool, collections_dir
):
    """A lease of another process's worker trusted a moment ago (no start task, no slot) still
    reads the lock's holder: once the owner stopped that worker and started another, the next
    lease goes to the new one, never to the old port (which another account's worker may take
    next). Borrowed leases take none of the borrower's own worker room."""
    (collections_dir / "mine").mkdir()
    owner, borrower = await make_pool(), await make_pool(max_workers=1)
    async with owner.lease("alice") as first:
        pass
    async with borrower.lease("alice") as borrowed:
        assert borrowed.port == first.port
    async with borrower.lease("mine"):  # the borrower's one worker slot, busy meanwhile
        async with borrower.lease("alice") as trusted:  # trusted: takes no room
            assert trusted.port == first.port
    owner.retire("alice", "test: a new worker")
    await owner.stop("alice")
    async with owner.lease("alice") as second:
        pass
    assert second.port != first.port
    async with borrower.lease("alice") as again:  # well within BORROW_SECONDS
        assert again.port == second.port
    async with borrower.lease("mine"):
        async with borrower.lease("alice") as trusted:  # the new one, trusted from there
            assert trusted.port == second.port
    assert borrower.stats()["live"] == 1 and owner.stats()["live"] == 1


async def test_a_lease_for_an_account_without_a_folder_here_is_503_and_makes_none(
    make_pool, collections_dir
):
    """A request routed here just before a cluster move took the account away: no worker, no
    empty folder put back on the node the account left (workers/lock.py)."""
    pool = await make_pool()
    with pytest.raises(Unavailable) as info:
        async with pool.lease("moved"):
            pass
    assert info.value.status == 503
    assert not (collections_dir / "moved").exists()
    assert live_worker_pids(collections_dir) == []


@pytest.mark.parametrize("trusted", [True, False], ids=["within-trust", "trust-ran-out"])
async def test_a_borrowed_worker_that_died_is_never_reached_on_its_port_by_another_account(
    make_pool, collections_dir, monkeypatch, trusted
):
    """The owner's worker dies (killed at its memory limit, a crash) while the owner process
    has no request for it: its lock stays held until the owner notices, but the port it
    published must not be used any more. Another account's worker may be listening there a
    moment later; a request sent to it would be answered with that worker's 403 (the user is
    logged out) at best. The borrower waits for the owner's new worker instead."""
    from aiohttp import web

    from gateway.workers import pool as pool_mod

    if not trusted:
        monkeypatch.setattr(pool_mod, "BORROW_SECONDS", 0.0)
    owner, borrower = await make_pool(), await make_pool()
    async with owner.lease("alice") as first:
        pass
    async with borrower.lease("alice") as borrowed:
        assert borrowed.port == first.port
    pid = pid_on(collections_dir, first.port)
    os.kill(pid, signal.SIGKILL)
    assert await wait_until(lambda: gone(pid))
    await asyncio.sleep(0.1)  # the owner's loop learns of the exit

    # Another account's worker takes the freed port: it answers /health like any other.
    reached: list[str] = []

    async def stand_in(request: web.Request) -> web.Response:
        reached.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stand_in)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", first.port).start()
    try:

        async def borrow() -> int:
            async with borrower.lease("alice") as worker:
                return worker.port

        lease = asyncio.create_task(borrow())
        await asyncio.sleep(0.2)
        async with owner.lease("alice") as second:  # the owner notices and starts another
            pass
        port = await asyncio.wait_for(lease, 15)
    finally:
        await runner.cleanup()
    assert port != first.port
    assert port == second.port
    assert reached == []
    assert (await login(port, "alice", secret_for("alice")))[0] == 200


async def test_a_worker_killed_while_starting_is_503_logged_and_counted(
    make_pool, collections_dir, caplog
):
    # The same death as a running worker's at its limit: a retryable answer, a WARNING with
    # the reason, the kill counted (the alert rule reads the counter).
    def kills() -> float:
        return REGISTRY.get_sample_value("gateway_worker_memory_kills_total") or 0.0

    caplog.set_level(logging.WARNING, logger="gateway.workers.pool")
    before = kills()
    pool = await make_pool(command=("sh", "-c", "kill -9 $$"))
    with pytest.raises(WorkerKilledStarting) as info:
        async with pool.lease("alice"):
            pass
    assert info.value.status == 503
    assert kills() == before + 1
    [record] = [r for r in caplog.records if r.getMessage() == "worker killed at its memory limit"]
    assert record.starting is True and record.account == "alice" and "SIGKILL" in record.reason
    assert pool.stats()["live"] == 0
    assert live_worker_pids(collections_dir) == []
