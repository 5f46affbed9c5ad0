"""The router (gateway/cluster/router.py) over a real SQLite directory and a fake clock: two
nodes' views of one directory."""

from __future__ import annotations

import pytest

from gateway.cluster.placement import Forward, Serve
from gateway.cluster.router import NodeIdInUse, Router
from gateway.cluster.sqlite import SqliteDirectory
from gateway.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def where(decision: Serve | Forward) -> str:
    return "here" if isinstance(decision, Serve) else decision.node.id


def router(
    tmp_path, node_id: str, clock: Clock, storage: str, load: int = 0, url: str = ""
) -> Router:
    return Router(
        SqliteDirectory(tmp_path / "cluster.sqlite3"),
        node_id=node_id,
        url=url or f"http://{node_id}/",
        storage=storage,
        lease_seconds=10,
        heartbeat_seconds=2,
        load=lambda: load,
        clock=clock,
    )


@pytest.mark.parametrize("storage", ["local", "shared"])
async def test_placement_forwarding_and_a_dead_owner(tmp_path, storage):
    clock = Clock()
    a, b = router(tmp_path, "a", clock, storage, load=5), router(tmp_path, "b", clock, storage)
    await a.beat()
    await b.beat()
    await a.beat()  # a sees b too
    # A new account reaching a goes to the less loaded b; both agree afterwards.
    assert where(await a.route("s1")) == "b"
    assert await b.route("s1") == Serve()
    # b stops beating; its lease runs out 10 s after its last heartbeat.
    clock.now += 11
    await a.beat()
    a.forget("s1")
    if storage == "local":
        with pytest.raises(Unavailable) as caught:
            await a.route("s1")
        assert caught.value.status == 503
    else:
        assert await a.route("s1") == Serve()  # taken over
        b.forget("s1")
        await b.beat()  # b comes back: it forwards to the new owner now
        assert where(await b.route("s1")) == "a"


async def test_a_lease_still_running_is_a_503_with_its_remaining_time(tmp_path):
    clock = Clock()
    a, b = router(tmp_path, "a", clock, "shared", load=5), router(tmp_path, "b", clock, "shared")
    await b.beat()
    await a.beat()
    assert where(await a.route("s1")) == "b"
    clock.now += 7  # b's heartbeat (10 s) has 3 s left, but a thinks b is alive
    assert where(await a.route("s1")) == "b"
    clock.now += 4  # b's heartbeat is over, the owner item's own lease too: takeover
    await a.beat()  # (a keeps beating; a node without heartbeats for a lease is fenced)
    a.forget("s1")
    assert await a.route("s1") == Serve()


async def test_owner_lookups_are_cached_for_a_second(tmp_path):
    clock = Clock()
    a = router(tmp_path, "a", clock, "local")
    await a.beat()
    assert await a.route("s1") == Serve()
    calls = 0
    real = a._directory.owner  # noqa: SLF001 - counting reads

    async def counted(sub: str):
        nonlocal calls
        calls += 1
        return await real(sub)

    a._directory.owner = counted  # type: ignore[method-assign]  # noqa: SLF001
    for _ in range(5):
        assert await a.route("s1") == Serve()
    assert calls == 0
    clock.now += 1.5
    assert await a.route("s1") == Serve()
    assert calls == 1


async def test_an_owner_that_joined_after_my_last_heartbeat_is_found_not_taken_for_dead(tmp_path):
    clock = Clock()
    a = router(tmp_path, "a", clock, "shared", load=5)
    await a.beat()  # a knows only itself
    b = router(tmp_path, "b", clock, "shared")
    await b.beat()
    assert await b.route("s1") == Serve()  # placed on b (b knows a is busier)
    # a has not heard b's heartbeat yet: it must look b up, not answer 503 or take over.
    assert where(await a.route("s1")) == "b"


async def test_a_directory_down_at_start_is_a_503_until_a_heartbeat_gets_through(tmp_path):
    clock = Clock()
    path = tmp_path / "cluster.sqlite3"
    a = router(tmp_path, "a", clock, "local")
    path.mkdir()  # the store cannot be opened now
    await a.start()  # starts anyway
    with pytest.raises(Unavailable) as caught:
        await a.route("s1")
    assert caught.value.status == 503
    path.rmdir()
    await a.beat()
    assert await a.route("s1") == Serve()
    await a.close()


async def test_a_clean_stop_ends_the_heartbeat_so_shared_accounts_move_at_once(tmp_path):
    clock = Clock()
    a = router(tmp_path, "a", clock, "shared", load=5)
    b = router(tmp_path, "b", clock, "shared")
    await a.beat()
    await b.beat()
    assert await b.route("s1") == Serve()
    clock.now += 11  # the claim's own expiry (10 s) is over; b keeps beating
    await b.beat()
    await a.beat()
    assert where(await a.route("s1")) == "b"
    await b.close()  # SIGTERM: b stops cleanly
    a.forget("s1")
    await a.beat()
    assert await a.route("s1") == Serve()  # no wait for b's lease


async def test_a_shared_node_that_cannot_heartbeat_for_a_lease_fences_itself(tmp_path):
    clock = Clock()
    path = tmp_path / "cluster.sqlite3"
    a = router(tmp_path, "a", clock, "shared")
    fenced: list[bool] = []
    a.on_fenced = lambda: fenced.append(True)
    await a.heartbeat()
    assert await a.route("s1") == Serve()
    path.unlink()
    path.mkdir()  # the directory cannot be reached from now on
    clock.now += 5
    await a.heartbeat()  # failed, but the lease (10 s) still holds
    a.forget("s1")
    assert not fenced
    clock.now += 6
    await a.heartbeat()
    await a.heartbeat()
    assert fenced == [True]  # once: its workers are stopped, their locks freed
    with pytest.raises(Unavailable):
        await a.route("s1")  # another node may own it now
    path.rmdir()
    await a.heartbeat()
    assert await a.route("s1") == Serve()  # back once a heartbeat gets through


async def test_a_directory_outage_serves_owners_read_before_and_refuses_the_rest(tmp_path):
    clock = Clock()
    path = tmp_path / "cluster.sqlite3"
    a = router(tmp_path, "a", clock, "local")
    await a.heartbeat()
    assert await a.route("known") == Serve()
    path.unlink()
    path.mkdir()  # DynamoDB throttled or unreachable, say
    clock.now += 30  # long past the one-second cache
    assert await a.route("known") == Serve()  # logged-in devices keep syncing
    with pytest.raises(Unavailable) as caught:
        await a.route("never-seen")
    assert caught.value.status == 503  # never 403


async def test_a_node_id_a_live_node_announces_from_another_url_does_not_start_twice(tmp_path):
    """A configuration copied to a new machine without a new `cluster.node_id`: both would
    serve that id's accounts, each its own worker (local storage: each from its own disk, two
    copies that drift apart). The second refuses to start while the first's heartbeat lasts;
    the same node restarted (same URL) starts, and so does the copy once the first stopped."""
    clock = Clock()
    first = router(tmp_path, "a", clock, "local")
    await first.start()
    copy = router(tmp_path, "a", clock, "local", url="http://elsewhere/")
    with pytest.raises(NodeIdInUse):
        await copy.start()
    restarted = router(tmp_path, "a", clock, "local")
    await restarted.start()
    await restarted.close()  # a clean stop: its heartbeat ends now
    await first.close()
    moved = router(tmp_path, "a", clock, "local", url="http://elsewhere/")
    await moved.start()
    await moved.close()
