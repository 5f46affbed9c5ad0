"""`POST sync/hostKey` through the full app: status codes, caching, limiter, single flight.

Cognito's rare paths (throttling, challenges, lockout, misconfiguration) come from FakeProvider;
the worker behind a successful login is the real stock server.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import zstandard

from gateway.app import create_app
from gateway.appkeys import REGISTRY
from gateway.config import load
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import (
    ChallengeRequired,
    LockedOut,
    ProviderMisconfigured,
    ProviderUnavailable,
    RefusedByOperator,
)

HEADER = json.dumps(
    {"v": 11, "k": "", "c": "26.09.3,test,linux", "s": "abc"}, separators=(",", ":")
)
PASSWORD = "pw-Secret-123"


def zbody(obj: object) -> bytes:
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(json.dumps(obj).encode()) + c.flush()


@pytest.fixture
def config(tmp_path):
    return load(
        None,
        {
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Test1",
            "GATEWAY_COGNITO_CLIENT_ID": "c",
            "GATEWAY_AUTH_MAX_FAILURES_PER_USER": "3",
        },
    )


@pytest.fixture
async def gateway(config, aiohttp_client):
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD, "alice@example.com")
    client = await aiohttp_client(create_app(config, provider=provider))
    return client, provider


async def login(client, body: bytes, header: str | None = HEADER):
    headers = {"Content-Type": "application/octet-stream"}
    if header is not None:
        headers["anki-sync"] = header
    async with client.post("/sync/hostKey", data=body, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def test_success_answers_zstd_key_with_original_size(gateway):
    client, _ = gateway
    status, headers, body = await login(client, zbody({"u": "alice", "p": PASSWORD}))
    assert status == 200
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert int(headers["anki-original-size"]) == len(raw)
    key = json.loads(raw)["key"]
    assert len(key) == 40
    account = await client.app[REGISTRY].account_for_key(key)
    assert account is not None and account.name == "alice"


async def test_concurrent_identical_logins_make_one_provider_call(gateway):
    client, provider = gateway
    provider.delay = 0.2
    results = await asyncio.gather(
        *(login(client, zbody({"u": "alice", "p": PASSWORD})) for _ in range(20))
    )
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1
    assert provider.calls == 1


@pytest.mark.parametrize(
    ("failure", "status", "retry_after"),
    [
        (ProviderUnavailable("throttled"), 503, True),
        (ChallengeRequired("NEW_PASSWORD_REQUIRED"), 403, False),
        (ChallengeRequired("SOFTWARE_TOKEN_MFA"), 403, False),
        (LockedOut("Password attempts exceeded"), 429, True),
        (RefusedByOperator("PreAuthentication failed with error on hold"), 403, False),
        (ProviderMisconfigured("ResourceNotFoundException"), 500, False),
    ],
)
async def test_provider_failures_map_to_the_design_status_table(
    gateway, config, failure, status, retry_after
):
    client, provider = gateway
    provider.fail_with = failure
    got, headers, _ = await login(client, zbody({"u": "alice", "p": PASSWORD}))
    assert got == status
    assert ("Retry-After" in headers) is retry_after
    assert list(config.collections_dir.iterdir()) == []


async def test_challenge_is_never_cached(gateway):
    client, provider = gateway
    provider.fail_with = ChallengeRequired("NEW_PASSWORD_REQUIRED")
    assert (await login(client, zbody({"u": "alice", "p": PASSWORD})))[0] == 403
    provider.fail_with = None
    assert (await login(client, zbody({"u": "alice", "p": PASSWORD})))[0] == 200
    assert provider.calls == 2


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not zstd at all",
        zbody([1, 2]),
        zbody({"u": "alice"}),
        zbody({"u": 5, "p": "x"}),
        zbody({"u": "alice", "p": "x" * 5000}),  # inflates past the cap
    ],
)
async def test_malformed_login_bodies_are_400(gateway, config, body):
    client, provider = gateway
    assert (await login(client, body))[0] == 400
    assert provider.calls == 0
    assert list(config.collections_dir.iterdir()) == []


async def test_zstd_bomb_is_400(gateway):
    client, provider = gateway
    c = zstandard.ZstdCompressor().compressobj()
    bomb = c.compress(b"{" + b" " * (64 * 1024 * 1024)) + c.flush()
    assert (await login(client, bomb))[0] == 400
    assert provider.calls == 0


async def test_bad_or_missing_anki_sync_header(gateway):
    client, provider = gateway
    body = zbody({"u": "alice", "p": PASSWORD})
    assert (await login(client, body, header='{"v":11}'))[0] == 400
    assert (await login(client, body, header=None))[0] == 501
    assert provider.calls == 0


async def test_repeated_failures_for_one_user_get_429_with_retry_after(gateway):
    client, provider = gateway
    for _ in range(3):
        assert (await login(client, zbody({"u": "alice", "p": "wrong"})))[0] == 403
    status, headers, _ = await login(client, zbody({"u": "alice", "p": PASSWORD}))
    assert status == 429
    assert int(headers["Retry-After"]) > 0
    assert provider.calls == 3  # the limited attempt never reached the provider


async def test_health_and_ready(gateway):
    client, _ = gateway
    async with client.get("/health") as r:
        assert r.status == 200
    async with client.get("/ready") as r:
        assert r.status == 200
        data = await r.json()
        assert data["ready"] is True
        assert "workers" not in data  # public: no counts of active users


async def test_passwords_and_host_keys_never_reach_the_logs(gateway, caplog):
    client, _ = gateway
    caplog.set_level("DEBUG")
    _, _, body = await login(client, zbody({"u": "alice", "p": PASSWORD}))
    key = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))["key"]
    await login(client, zbody({"u": "alice", "p": "Wrong-Secret-xyz"}))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert len(caplog.records) > 3
    for secret in (PASSWORD, "Wrong-Secret-xyz", key):
        assert secret not in text


async def test_login_body_split_across_many_chunks_is_read_whole(gateway):
    client, _ = gateway
    body = zbody({"u": "alice", "p": PASSWORD})

    async def trickle():
        for i in range(len(body)):
            yield body[i : i + 1]
            await asyncio.sleep(0.001)

    status, _, _ = await login(client, trickle())
    assert status == 200


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_limit_through(gateway):
    client, provider = gateway  # max_failures_per_user: 3
    provider.delay = 0.05
    results = await asyncio.gather(
        *(login(client, zbody({"u": "alice", "p": f"guess-{n}"})) for n in range(40))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [403] * 3 + [429] * 37
    assert provider.calls == 3


async def test_a_look_alike_accounts_success_does_not_clear_the_victims_budget(gateway):
    client, provider = gateway  # max_failures_per_user: 3
    provider.add_user("victim", PASSWORD)
    provider.add_user("ｖictim", PASSWORD)  # another Cognito user; the same canonical spelling
    for _ in range(2):
        assert (await login(client, zbody({"u": "victim", "p": "wrong"})))[0] == 403
    assert (await login(client, zbody({"u": "ｖictim", "p": PASSWORD})))[0] == 200
    assert (await login(client, zbody({"u": "victim", "p": "wrong"})))[0] == 403
    assert (await login(client, zbody({"u": "victim", "p": "wrong"})))[0] == 429


async def test_failures_age_out_of_the_window_rather_than_being_cleared_by_a_success(
    gateway,
):
    client, provider = gateway  # max_failures_per_user: 3
    for _ in range(2):
        assert (await login(client, zbody({"u": "Alice", "p": "wrong"})))[0] == 403
    assert (await login(client, zbody({"u": "alice", "p": PASSWORD})))[0] == 200
    assert (await login(client, zbody({"u": "ALICE", "p": "wrong"})))[0] == 403  # the 3rd
    assert (await login(client, zbody({"u": "alice", "p": "wrong"})))[0] == 429


async def test_an_unavailable_provider_does_not_count_as_a_failure(gateway):
    client, provider = gateway  # max_failures_per_user: 3
    provider.fail_with = ProviderUnavailable("throttled")
    for _ in range(5):
        assert (await login(client, zbody({"u": "alice", "p": PASSWORD})))[0] == 503
    provider.fail_with = None
    assert (await login(client, zbody({"u": "alice", "p": PASSWORD})))[0] == 200


async def test_a_re_created_user_signing_in_by_email_never_gets_the_old_key(gateway):
    client, provider = gateway
    provider.add_user("remy", PASSWORD, "remy@example.com")
    status, _, body = await login(client, zbody({"u": "remy@example.com", "p": PASSWORD}))
    old_key = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))["key"]
    provider.delete("remy")
    new_sub = provider.add_user("remy", PASSWORD, "remy@example.com")
    # The new user's first login uses the username; the email entry of the old sub must go.
    assert (await login(client, zbody({"u": "remy", "p": PASSWORD})))[0] == 200
    status, _, body = await login(client, zbody({"u": "remy@example.com", "p": PASSWORD}))
    key = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(body))["key"]
    assert status == 200 and key != old_key
    registry = client.app[REGISTRY]
    assert (await registry.account_for_key(key)).sub == new_sub
    # The old account's owner was re-checked at once: it is gone, so its key is refused.
    for _ in range(50):
        if await registry.account_for_key(old_key) is None:
            break
        await asyncio.sleep(0.01)
    assert await registry.account_for_key(old_key) is None
