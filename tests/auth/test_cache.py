import asyncio

import pytest

from gateway.auth.cache import CredentialCache, SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hit_needs_the_same_password():
    cache: CredentialCache[str] = CredentialCache(ttl=60, maxsize=10)
    cache.put(cache.key("alice", "right"), "ok")
    assert cache.get(cache.key("alice", "right")) == "ok"
    assert cache.get(cache.key("alice", "wrong")) is None
    assert cache.get(cache.key("Alice", "right")) is None


def test_entries_expire_after_ttl():
    clock = Clock()
    cache: CredentialCache[str] = CredentialCache(ttl=60, maxsize=10, clock=clock)
    cache.put(cache.key("alice", "pw"), "ok")
    clock.now += 59
    assert cache.get(cache.key("alice", "pw")) == "ok"
    clock.now += 2
    assert cache.get(cache.key("alice", "pw")) is None


def test_cache_is_bounded():
    cache: CredentialCache[int] = CredentialCache(ttl=60, maxsize=3)
    for i in range(10):
        cache.put(cache.key(f"user{i}", "pw"), i)
    assert len(cache) == 3


def test_key_holds_no_password_and_differs_between_processes():
    a: CredentialCache[int] = CredentialCache(ttl=60, maxsize=3)
    b: CredentialCache[int] = CredentialCache(ttl=60, maxsize=3)
    key = a.key("alice", "hunter2hunter2")
    assert b"hunter2" not in key[1]
    assert key != b.key("alice", "hunter2hunter2")


def test_username_and_password_boundary_is_unambiguous():
    cache: CredentialCache[int] = CredentialCache(ttl=60, maxsize=3)
    assert cache.key("ab", "c") != cache.key("a", "bc")


def test_forget_drops_matching_entries():
    cache: CredentialCache[str] = CredentialCache(ttl=60, maxsize=10)
    cache.put(cache.key("a", "1"), "sub-a")
    cache.put(cache.key("b", "1"), "sub-b")
    assert cache.forget(lambda k, v: v == "sub-a") == 1
    assert cache.get(cache.key("a", "1")) is None
    assert cache.get(cache.key("b", "1")) == "sub-b"


async def test_single_flight_makes_one_call_for_concurrent_identical_keys():
    flights: SingleFlight[int] = SingleFlight()
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(flights.run("k", call) for _ in range(50)))
    assert results == [42] * 50
    assert calls == 1


async def test_single_flight_shares_errors_and_then_forgets_them():
    flights: SingleFlight[int] = SingleFlight()
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    results = await asyncio.gather(
        *(flights.run("k", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    assert calls == 1
    with pytest.raises(ValueError):
        await flights.run("k", failing)
    assert calls == 2


def test_forget_tags_drops_tagged_entries_but_the_kept_one():
    cache = CredentialCache(ttl=60, maxsize=100)
    a, b, c = cache.key("a", "1"), cache.key("a", "2"), cache.key("c", "3")
    cache.put(a, "A", ["sub:s1", "name:a"])
    cache.put(b, "B", ["sub:s1", "name:a"])
    cache.put(c, "C", ["sub:s2", "name:c"])
    assert cache.forget_tags(["sub:s1"], keep=a) == 1
    assert (cache.get(a), cache.get(b), cache.get(c)) == ("A", None, "C")
    assert cache.forget_tags(["name:c", "name:nobody"]) == 1
    assert len(cache) == 1


def test_the_tag_index_does_not_outgrow_the_cache():
    now = [0.0]
    cache = CredentialCache(ttl=1, maxsize=10_000, clock=lambda: now[0])
    for n in range(5_000):
        now[0] += 0.01  # each entry expires 100 puts later
        cache.put(cache.key(f"u{n}", "p"), n, [f"sub:{n}"])
    assert len(cache._tags_of) <= 2 * len(cache) + 1024
    assert len(cache._by_tag) <= 2 * len(cache) + 1024
