"""Local mode's PoolKeeper: one re-creation for all the calls that found the pool gone."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.identity.fake import FakeProvider
from gateway.identity.provider import ProviderMisconfigured
from gateway.local.keeper import FORGOTTEN, PoolKeeper

IDS = ("pool-1", "client-1")


def forgotten(code: str = FORGOTTEN) -> ProviderMisconfigured:
    error = ProviderMisconfigured(f"Cognito {code}")
    error.code = code
    return error


class Recreate:
    """Counts re-creations (in the keeper's thread); the stand-in then has the pool again."""

    def __init__(self, fake: FakeProvider, ids: tuple[str, str] = IDS) -> None:
        self.fake, self.ids, self.count = fake, ids, 0
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, str]:
        with self._lock:
            self.count += 1
        time.sleep(0.1)  # the other calls fail meanwhile
        self.fake.fail_with = None
        return self.ids


async def test_calls_that_find_the_pool_gone_recreate_it_once_and_succeed():
    fake = FakeProvider(delay=0.05)
    fake.add_user("demo@example.com", "pw-123456")
    fake.fail_with = forgotten()
    recreate = Recreate(fake)
    keeper = PoolKeeper(fake, recreate, IDS)
    answers = await asyncio.gather(
        *(keeper.authenticate("demo@example.com", "pw-123456") for _ in range(5))
    )
    assert {a.username for a in answers} == {"demo@example.com"}
    assert recreate.count == 1


async def test_other_misconfiguration_is_not_papered_over():
    fake = FakeProvider(fail_with=forgotten("AccessDeniedException"))
    recreate = Recreate(fake)
    with pytest.raises(ProviderMisconfigured):
        await PoolKeeper(fake, recreate, IDS).lookup("x")
    assert recreate.count == 0


async def test_a_pool_that_comes_back_with_another_id_is_an_error():
    fake = FakeProvider(fail_with=forgotten())
    fake.add_user("demo@example.com", "pw-123456")
    keeper = PoolKeeper(fake, Recreate(fake, ("pool-2", "client-2")), IDS)
    with pytest.raises(ProviderMisconfigured, match="new id"):
        await keeper.authenticate("demo@example.com", "pw-123456")
