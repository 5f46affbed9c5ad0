import asyncio

import pytest

from gateway.auth.revalidation import RETRY_AFTER_FAILURE, Revalidator
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import ProviderUnavailable
from gateway.registry import ACTIVE, DISABLED, SUSPENDED, SqliteRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup(tmp_path):
    clock = Clock()
    provider = FakeProvider()
    registry = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c", clock=clock)
    suspended: list[str] = []
    reval = Revalidator(provider, registry, 100, on_suspend=suspended.append, clock=clock)
    yield clock, provider, registry, reval, suspended
    await registry.close()


async def add(provider, registry, name="alice"):
    provider.add_user(name, "pw")
    identity = await provider.lookup(name)
    account, _ = await registry.ensure(identity)
    await registry.touch(identity.sub)
    return await registry.get(identity.sub)


async def test_not_due_within_the_interval(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    clock.now += 99
    assert not reval.due(await registry.get(account.sub))
    clock.now += 2
    assert reval.due(await registry.get(account.sub))


async def test_enabled_user_is_confirmed(setup):
    clock, provider, registry, reval, suspended = setup
    account = await add(provider, registry)
    clock.now += 500
    await reval.check(await registry.get(account.sub))
    assert (await registry.get(account.sub)).checked_at == clock.now
    assert (await registry.get(account.sub)).status == ACTIVE and suspended == []


async def test_disabled_user_is_suspended_and_loses_key(setup):
    clock, provider, registry, reval, suspended = setup
    account = await add(provider, registry)
    await registry.add_host_key(account.sub, "k" * 40)
    provider.disable("alice")
    clock.now += 500
    reval.maybe_check(await registry.get(account.sub))
    await asyncio.sleep(0.01)
    assert (await registry.get(account.sub)).status == SUSPENDED
    assert await registry.account_for_key("k" * 40) is None
    assert suspended == [account.sub]


async def test_deleted_user_is_suspended(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    provider._users.clear()
    await reval.check(await registry.get(account.sub))
    assert (await registry.get(account.sub)).status == SUSPENDED


async def test_outage_changes_nothing_and_retries_a_minute_later(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    clock.now += 500
    provider.fail_with = ProviderUnavailable("down")
    await reval.check(await registry.get(account.sub))
    after = await registry.get(account.sub)
    assert after.status == ACTIVE
    assert not reval.due(after)
    clock.now += RETRY_AFTER_FAILURE
    assert reval.due(await registry.get(account.sub))


async def test_operator_disabled_accounts_are_not_checked(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    await registry.set_status(account.sub, DISABLED)
    clock.now += 500
    assert not reval.due(await registry.get(account.sub))


async def test_concurrent_triggers_make_one_lookup(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    calls = provider.calls
    provider.delay = 0.05
    clock.now += 500
    for _ in range(10):
        reval.maybe_check(await registry.get(account.sub))
    await asyncio.sleep(0.1)
    assert provider.calls == calls + 1


async def test_an_operator_disable_during_a_check_is_not_turned_into_a_suspension(setup):
    clock, provider, registry, reval, suspended = setup
    account = await add(provider, registry)
    provider.disable("alice")
    provider.delay = 0.05
    clock.now += 500
    task = asyncio.get_running_loop().create_task(reval.check(await registry.get(account.sub)))
    await asyncio.sleep(0.01)
    await registry.set_status(account.sub, DISABLED)  # the operator, while the check runs
    await task
    assert (await registry.get(account.sub)).status == DISABLED  # a later login cannot lift it
    assert suspended == []


async def test_a_registry_outage_postpones_the_check_without_raising(tmp_path, caplog):
    from tests.outage import Outage

    clock = Clock()
    provider = FakeProvider()
    registry = Outage(tmp_path / "r.sqlite3", tmp_path / "c", clock=clock)
    reval = Revalidator(provider, registry, 100, clock=clock)
    account = await add(provider, registry)
    provider.disable("alice")
    registry.down = True
    await reval.check(account)  # a background task: an exception would go unretrieved
    assert "revalidation postponed: registry unavailable" in caplog.text
    registry.down = False
    assert (await registry.get(account.sub)).status == ACTIVE  # nothing changed
    await reval.check(account)
    assert (await registry.get(account.sub)).status == SUSPENDED
    await registry.close()


async def test_the_check_reads_the_owner_by_the_username_recorded_with_the_account(setup):
    clock, provider, registry, reval, _ = setup
    account = await add(provider, registry)
    clock.now += 500
    await reval.check(await registry.get(account.sub))
    assert provider.lookups_by_username == 1


async def test_checks_over_the_calls_per_second_budget_are_put_off_never_a_logout(tmp_path):
    clock, tick = Clock(), Clock()
    provider = FakeProvider()
    registry = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c", clock=clock)
    reval = Revalidator(provider, registry, 100, clock=clock, calls_per_second=2, monotonic=tick)
    accounts = [await add(provider, registry, f"user{n}") for n in range(5)]
    for name in ("user0", "user1", "user2", "user3", "user4"):
        provider.disable(name)
    clock.now += 500
    before = provider.calls
    for account in accounts:
        reval.maybe_check(await registry.get(account.sub))
    await asyncio.sleep(0.05)
    assert provider.calls - before == 2 and reval.deferred == 3
    statuses = [(await registry.get(a.sub)).status for a in accounts]
    assert statuses == [SUSPENDED, SUSPENDED, ACTIVE, ACTIVE, ACTIVE]
    # A waiting (overdue) check over the budget returns at once; the key keeps working.
    await reval.wait_for_check(await registry.get(accounts[2].sub))
    assert (await registry.get(accounts[2].sub)).status == ACTIVE and reval.deferred == 4
    tick.now += 1.0  # a second later: two more
    for account in accounts[2:]:
        reval.maybe_check(await registry.get(account.sub))
    await asyncio.sleep(0.05)
    statuses = [(await registry.get(a.sub)).status for a in accounts]
    assert statuses == [SUSPENDED, SUSPENDED, SUSPENDED, SUSPENDED, ACTIVE]
    await reval.close()
    await registry.close()


async def test_cognito_throttling_a_re_check_changes_nothing(tmp_path):
    import boto3
    from botocore.stub import Stubber

    from gateway.config import CognitoConfig
    from gateway.identity.cognito import CognitoProvider
    from gateway.identity.provider import Identity

    clock = Clock()
    client = boto3.client("cognito-idp", region_name="eu-west-1")
    stubber = Stubber(client)
    stubber.add_client_error(
        "admin_get_user", "TooManyRequestsException", "Rate exceeded", http_status_code=400
    )
    stubber.activate()
    provider = CognitoProvider(
        CognitoConfig(user_pool_id="eu-west-1_abc", client_id="c", region="eu-west-1"),
        client=client,
    )
    registry = SqliteRegistry(tmp_path / "r.sqlite3", tmp_path / "c", clock=clock)
    sub = "3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"
    account, _ = await registry.ensure(Identity(sub, "alice", "alice@example.com"))
    await registry.add_host_key(sub, "k" * 40)
    reval = Revalidator(provider, registry, 100, clock=clock, calls_per_second=5)
    clock.now += 500
    await reval.wait_for_check(await registry.get(sub))
    assert reval.postponed == 1
    assert (await registry.get(sub)).status == ACTIVE
    assert await registry.account_for_key("k" * 40) is not None
    stubber.assert_no_pending_responses()
    await provider.close()
    await registry.close()
