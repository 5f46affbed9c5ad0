"""Admission: one decision per proxied request — refuse, admit and check in the background, or
wait for the check. FakeProvider as the identity provider, a real registry, an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth.admission import OVERDUE_FACTOR, Admission
from gateway.auth.limiter import FailureLimiter
from gateway.auth.revalidation import Revalidator
from gateway.errors import AuthFailed, TooManyAttempts
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import ProviderUnavailable
from gateway.registry import DISABLED, SUSPENDED, Account, Registry, SqliteRegistry

INTERVAL = 100
KEY = "a" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 50_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def world(tmp_path):
    clock = Clock()
    provider = FakeProvider()
    registry = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c", clock=clock)
    revalidator = Revalidator(provider, registry, INTERVAL, clock=clock)
    provider.add_user("alice", "pw", "alice@example.com")
    identity = await provider.lookup("alice")
    await registry.ensure(identity)
    await registry.add_host_key(identity.sub, KEY)
    await registry.touch(identity.sub)  # confirmed by the provider now
    yield clock, provider, registry, revalidator, Admission(registry, revalidator)
    await revalidator.close()
    await registry.close()


async def test_a_fresh_account_is_admitted_without_a_provider_call(world):
    clock, provider, _, _, admission = world
    clock.now += INTERVAL - 1
    assert (await admission.admit(KEY)).name == "alice"
    assert provider.calls == 1  # the lookup in the fixture only


@pytest.mark.parametrize("key", ["", "b" * 40, "a" * 39])
async def test_unknown_keys_are_refused(world, key):
    *_, admission = world
    with pytest.raises(AuthFailed):
        await admission.admit(key)


async def test_a_due_check_runs_in_the_background_and_the_next_request_sees_it(world):
    clock, provider, registry, _, admission = world
    provider.disable("alice")
    provider.delay = 0.05
    clock.now += INTERVAL + 1
    assert (await admission.admit(KEY)).name == "alice"  # not waiting for the provider
    await asyncio.sleep(0.1)
    with pytest.raises(AuthFailed):
        await admission.admit(KEY)
    assert (await registry.get_by_name("alice")).status == SUSPENDED


async def test_an_overdue_request_waits_for_the_check_and_is_refused(world):
    clock, provider, _, _, admission = world
    provider.delete("alice")
    clock.now += OVERDUE_FACTOR * INTERVAL
    with pytest.raises(AuthFailed):
        await admission.admit(KEY)


async def test_concurrent_overdue_requests_share_one_provider_call(world):
    clock, provider, _, _, admission = world
    provider.delay = 0.05
    clock.now += OVERDUE_FACTOR * INTERVAL + 5
    before = provider.calls
    accounts = await asyncio.gather(*(admission.admit(KEY) for _ in range(20)))
    assert {a.name for a in accounts} == {"alice"}
    assert provider.calls == before + 1


async def test_an_unreachable_provider_admits_and_postpones_the_check(world):
    clock, provider, registry, revalidator, admission = world
    provider.fail_with = ProviderUnavailable("down")
    clock.now += 10 * INTERVAL
    assert (await admission.admit(KEY)).name == "alice"
    assert revalidator.postponed == 1
    # Not overdue any more: the next requests do not wait for the provider again...
    calls = provider.calls
    assert (await admission.admit(KEY)).name == "alice"
    assert provider.calls == calls
    # ...and the check is tried again once the retry delay has passed.
    clock.now += INTERVAL
    await admission.admit(KEY)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert revalidator.postponed == 2
    assert (await registry.get_by_name("alice")).active


async def test_operator_disable_and_sign_out_refuse_at_once_without_the_provider(world):
    _, provider, registry, _, admission = world
    sub = (await registry.get_by_name("alice")).sub
    await registry.sign_out(sub)
    with pytest.raises(AuthFailed):
        await admission.admit(KEY)
    await registry.add_host_key(sub, "c" * 40, generation=1)
    assert (await admission.admit("c" * 40)).key_generation == 1
    await registry.set_status(sub, DISABLED)
    with pytest.raises(AuthFailed):
        await admission.admit("c" * 40)
    assert provider.calls == 1


async def test_an_address_spraying_unknown_keys_is_held_back_without_lookups(world):
    # Each unknown key is one store read (a DynamoDB GetItem): one address may not make them
    # at will. Keys this process already knows are still admitted from that address.
    clock, _, registry, revalidator, _ = world
    admission = Admission(registry, revalidator, FailureLimiter(3, 900, clock=clock))
    assert (await admission.admit(KEY, "203.0.113.9")).name == "alice"  # known from now on
    lookups = count_lookups(registry)
    for n in range(3):
        with pytest.raises(AuthFailed):
            await admission.admit(f"{n:040x}", "203.0.113.9")
    assert len(lookups) == 3
    with pytest.raises(TooManyAttempts) as refused:
        await admission.admit("f" * 40, "203.0.113.9")
    assert refused.value.status == 429 and refused.value.retry_after
    assert len(lookups) == 3  # no read for it
    assert (await admission.admit(KEY, "203.0.113.9")).name == "alice"
    with pytest.raises(AuthFailed):
        await admission.admit("f" * 40, "198.51.100.7")  # another address: looked up
    clock.now += 901
    with pytest.raises(AuthFailed):
        await admission.admit("f" * 40, "203.0.113.9")
    assert len(lookups) == 6


def count_lookups(registry: Registry) -> list[str]:
    """The keys `registry.account_for_key` is asked about from now on."""
    asked: list[str] = []
    lookup = registry.account_for_key

    async def counted(host_key: str) -> Account | None:
        asked.append(host_key)
        return await lookup(host_key)

    registry.account_for_key = counted  # type: ignore[method-assign]
    return asked
