"""The gateway's resources, one cleanup context each (gateway/resources.py): a start-up step
that fails closes what the steps before it opened."""

from __future__ import annotations

import sqlite3

import pytest
from aiohttp import web

from gateway import resources
from gateway.app import create_app
from gateway.appkeys import REGISTRY
from gateway.identity.fake import FakeProvider
from gateway.workers.containment import ContainmentUnavailable
from tests.conftest import fake_provider_config


async def test_a_failing_start_up_step_closes_the_registry_provider_and_sessions(tmp_path):
    # Containment "cgroup" where there is no cgroup: the pool's step fails, after the registry,
    # the provider and both upstream sessions were opened.
    not_a_cgroup = tmp_path / "not-a-cgroup"
    not_a_cgroup.mkdir()
    config = fake_provider_config(
        tmp_path,
        GATEWAY_WORKERS_CONTAINMENT="cgroup",
        GATEWAY_WORKERS_CGROUP_DIR=str(not_a_cgroup),
    )
    provider = FakeProvider()
    app = create_app(config, provider=provider)
    runner = web.AppRunner(app)
    with pytest.raises(ContainmentUnavailable):
        await runner.setup()
    await runner.cleanup()  # as app._serve does after a failed set-up
    assert provider.closed
    with pytest.raises(sqlite3.ProgrammingError):  # "Cannot operate on a closed database"
        await app[REGISTRY].count()
    assert app[resources._UPSTREAM].closed and app[resources._REUSED].closed


async def test_a_started_gateway_closes_every_resource_once_at_shutdown(tmp_path):
    provider = FakeProvider()
    app = create_app(fake_provider_config(tmp_path), provider=provider)
    runner = web.AppRunner(app)
    await runner.setup()
    assert not provider.closed and not app[resources._UPSTREAM].closed
    await runner.cleanup()
    assert provider.closed
    assert app[resources._UPSTREAM].closed and app[resources._REUSED].closed
