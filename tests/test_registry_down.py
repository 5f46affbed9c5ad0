"""A registry that cannot answer (`RegistryUnavailable`) is a 503 on every route, never a 403:
a 403 logs the user out of Anki, and the user's credentials are not what failed.

The outage is a switch on the real SQLite registry (tests/outage.py, the `outage` fixture).
"""

from __future__ import annotations

import json

import zstandard

from gateway.app import create_app
from gateway.identity.fake import FakeProvider
from tests.conftest import fake_provider_config

PASSWORD = "pw-Secret-123"
API_KEY = "provision-key-0123456789"


def zbody(obj: object) -> bytes:
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(json.dumps(obj).encode()) + c.flush()


def header(key: str = "") -> str:
    return json.dumps({"v": 11, "k": key, "c": "26.09.3,test,linux", "s": "abc"})


async def test_an_outage_is_a_503_on_login_sync_provisioning_and_ready(
    outage, tmp_path, aiohttp_client
):
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD, "alice@example.com")
    bob = provider.add_user("bob", PASSWORD, "bob@example.com")  # its sub
    config = fake_provider_config(tmp_path, GATEWAY_PROVISION_API_KEY=API_KEY)
    client = await aiohttp_client(create_app(config, provider=provider))

    async def login(user: str) -> tuple[int, bytes]:
        async with client.post(
            "/sync/hostKey",
            data=zbody({"u": user, "p": PASSWORD}),
            headers={"anki-sync": header()},
        ) as r:
            return r.status, await r.read()

    status, body = await login("alice")
    assert status == 200
    key = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))["key"]

    outage[0].down = True
    assert (await login("alice"))[0] == 503  # a cached login reads the account
    assert (await login("bob"))[0] == 503  # a first login creates one
    async with client.post(
        "/sync/meta", data=zbody({"v": 11, "cv": "test"}), headers={"anki-sync": header(key)}
    ) as r:
        assert r.status == 503  # a logged-in device: not logged out
        assert "Retry-After" in r.headers
    async with client.post(
        "/provision-user",
        json={"username": "bob", "sub": bob, "email": "bob@example.com"},
        headers={"X-API-Key": API_KEY},
    ) as r:
        assert r.status == 503 and (await r.json())["success"] is False
        assert "Retry-After" in r.headers
    async with client.get("/ready") as r:
        assert r.status == 503 and (await r.json())["problems"] == ["registry not writable"]

    outage[0].down = False
    assert (await login("alice"))[0] == 200
    async with client.post(
        "/sync/meta", data=zbody({"v": 11, "cv": "test"}), headers={"anki-sync": header(key)}
    ) as r:
        assert r.status == 200  # the key was never revoked


async def test_the_gateway_starts_while_the_registry_is_down(
    outage, tmp_path, aiohttp_client, monkeypatch
):
    from tests.outage import Outage

    monkeypatch.setattr(Outage, "down", True)
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD, "alice@example.com")
    token = "metrics-token-0123456789"
    config = fake_provider_config(
        tmp_path, GATEWAY_METRICS_ENABLED="false", GATEWAY_METRICS_BEARER_TOKEN=token
    )
    client = await aiohttp_client(create_app(config, provider=provider))
    async with client.get("/health") as r:
        assert r.status == 200
    async with client.get("/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
        assert r.status == 200 and "gateway_workers" in text  # the rest still helps
        assert 'gateway_accounts{status="active"}' not in text
    async with client.get("/ready") as r:
        assert r.status == 503
    async with client.post(
        "/sync/hostKey", data=zbody({"u": "alice", "p": PASSWORD}), headers={"anki-sync": header()}
    ) as r:
        assert r.status == 503
