"""Made-up host keys through the whole gateway: every unknown key costs the registry a read (a
DynamoDB GetItem with that backend), so one address sending many is held back with 429 (not
403: its keys were not looked at) while devices logged in from that address keep syncing."""

from __future__ import annotations

import json

import zstandard

from gateway.app import REGISTRY, create_app
from gateway.identity.fake import FakeProvider
from tests.auth.test_admission import count_lookups
from tests.conftest import fake_provider_config
from tests.test_registry_down import PASSWORD, header, zbody


async def test_an_address_spraying_made_up_keys_gets_429_and_its_own_devices_still_sync(
    tmp_path, aiohttp_client
):
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD, "alice@example.com")
    config = fake_provider_config(tmp_path, GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS="3")
    app = create_app(config, provider=provider)
    client = await aiohttp_client(app)
    async with client.post(
        "/sync/hostKey", data=zbody({"u": "alice", "p": PASSWORD}), headers={"anki-sync": header()}
    ) as r:
        assert r.status == 200
        key = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(await r.read()))
    lookups = count_lookups(app[REGISTRY])

    async def meta(host_key: str) -> int:
        async with client.post(
            "/sync/meta",
            data=zbody({"v": 11, "cv": "test"}),
            headers={"anki-sync": header(host_key)},
        ) as r:
            return r.status

    assert [await meta(f"{n:040x}") for n in range(5)] == [403, 403, 403, 429, 429]
    assert len(lookups) == 3
    assert await meta(key["key"]) == 200
