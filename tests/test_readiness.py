"""`GET /ready`: true about disk space and the registry, and silent about worker counts."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.app import create_app
from gateway.identity.fake import FakeProvider
from gateway.ops.readiness import Probe, problems
from tests.conftest import fake_provider_config

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("found", "min_free_megs", "expected"),
    [
        (Probe(True, True, 2048 * MIB), 1024, []),
        (Probe(True, True, 1024 * MIB), 1024, []),
        (Probe(True, True, 1024 * MIB - 1), 1024, ["low disk space"]),
        (Probe(True, True, 0), 0, []),  # 0 turns the check off
        (Probe(False, True, 2048 * MIB), 1024, ["registry not writable"]),
        (
            Probe(False, False, 0),
            1,
            ["registry not writable", "collections folder missing", "low disk space"],
        ),
    ],
)
def test_problems(found, min_free_megs, expected):
    assert problems(found, min_free_megs) == expected


async def get_ready(aiohttp_client, config) -> tuple[int, dict]:
    client = await aiohttp_client(create_app(config, provider=FakeProvider()))
    async with client.get("/ready") as r:
        return r.status, await r.json()


async def test_ready_answers_only_whether_and_why(aiohttp_client, tmp_path):
    assert await get_ready(aiohttp_client, fake_provider_config(tmp_path)) == (
        200,
        {"ready": True, "problems": []},
    )


async def test_not_ready_when_free_space_is_below_the_threshold(aiohttp_client, tmp_path):
    # More than any test machine has free: what a full disk looks like to the check.
    config = fake_provider_config(tmp_path, GATEWAY_SERVER_MIN_FREE_DISK_MEGS=str(10**12))
    assert await get_ready(aiohttp_client, config) == (
        503,
        {"ready": False, "problems": ["low disk space"]},
    )


async def test_not_ready_when_the_registry_cannot_be_written(aiohttp_client, tmp_path):
    config = fake_provider_config(tmp_path)
    client = await aiohttp_client(create_app(config, provider=FakeProvider()))
    other = sqlite3.connect(config.data_dir / "registry.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        async with client.get("/ready") as r:
            assert r.status == 503
            assert (await r.json())["problems"] == ["registry not writable"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with client.get("/ready") as r:
        assert r.status == 200
