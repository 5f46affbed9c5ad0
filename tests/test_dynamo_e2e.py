"""The gateway with its registry on DynamoDB: a moto server in its own process stands in for
DynamoDB (real HTTP, as from a gateway node), moto in this process for Cognito, the real `anki`
client against real stock sync servers; the operator's command line in a process of its own.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anki.errors import BackendError, SyncError

from tests.ankiclient import Client, is_auth_error
from tests.conftest import REGION

PASSWORD = "Correct-Horse-9"
TABLE = "anki-gateway-e2e"
CACHE_SECONDS = 1.0


@pytest.fixture
def dynamodb_server(moto_server: str) -> str:
    """The run's moto server (its own process: real HTTP, as from a gateway node), emptied for
    this test; its URL."""
    request = urllib.request.Request(moto_server + "/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(request, timeout=30).close()  # noqa: S310 - loopback
    return moto_server


def accounts_cli(
    data_dir: Path, cognito: Any, table: str, endpoint_url: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`python -m gateway accounts ARGS...` in a process of its own, on `data_dir` and the
    DynamoDB `table` at `endpoint_url` (a moto server), with the moto pool's settings."""
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_COGNITO_USER_POOL_ID": cognito.pool_id,
        "GATEWAY_COGNITO_CLIENT_ID": cognito.client_id,
        "GATEWAY_COGNITO_REGION": REGION,
        "GATEWAY_REGISTRY_BACKEND": "dynamodb",
        "GATEWAY_REGISTRY_TABLE": table,
        "GATEWAY_REGISTRY_ENDPOINT_URL": endpoint_url,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "accounts", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return cli


def test_login_sync_and_a_command_line_sign_out_through_a_dynamodb_registry(
    cognito: Any, dynamodb_server: str, start_gateway: Any, tmp_path: Path
) -> None:
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    config = cognito.config(tmp_path / "data")
    registry = dataclasses.replace(
        config.registry,
        backend="dynamodb",
        table=TABLE,
        endpoint_url=dynamodb_server,
        cache_seconds=CACHE_SECONDS,
    )
    config = dataclasses.replace(config, registry=registry)
    # The table, not a file, is shared: the command line gets a data folder of its own.
    cli = accounts_cli(tmp_path / "cli-data", cognito, TABLE, dynamodb_server)

    made = cli("create-table")
    assert made.returncode == 0, made.stderr
    gw = start_gateway(config)
    with urllib.request.urlopen(gw.url + "ready", timeout=30) as ready:  # noqa: S310 - loopback
        assert ready.status == 200
    phone = Client(tmp_path / "clients" / "phone")
    phone.add_note("written through a DynamoDB registry")
    phone.login("alice", PASSWORD, gw.url)
    phone.sync()
    laptop = Client(tmp_path / "clients" / "laptop")
    laptop.login("alice", PASSWORD, gw.url)
    laptop.sync()
    assert laptop.note_fronts() == {"written through a DynamoDB registry"}
    old_key = phone.auth.hkey
    # The account's folder was made by its worker, on this node's disk.
    assert (config.collections_dir / "alice" / "collection.anki2").is_file()

    listed = cli("list")
    assert listed.returncode == 0 and "alice\tactive\talice" in listed.stdout
    signed_out = cli("sign-out", "alice")
    assert signed_out.returncode == 0, signed_out.stderr
    assert "alice: signed out everywhere (key generation 1)" in signed_out.stdout

    time.sleep(CACHE_SECONDS + 0.5)  # the documented bound for a change made elsewhere
    for device in (phone, laptop):
        with pytest.raises(SyncError) as info:
            device.sync()
        assert is_auth_error(info.value)

    # The next login gets a new key, from a worker started with the new generation's password.
    phone.login("alice", PASSWORD, gw.url)
    assert phone.auth.hkey != old_key
    phone.add_note("after signing out")
    phone.sync()
    laptop.login("alice", PASSWORD, gw.url)
    laptop.sync()
    assert laptop.note_fronts() == {"written through a DynamoDB registry", "after signing out"}

    # The operator's per-account limit, set in the table from the command line, reaches the
    # running gateway: a media file over it gets Anki's message.
    limited = cli("quota", "alice", "--media-file-megs", "1")
    assert limited.returncode == 0 and "media_file: 1 MB" in limited.stdout, limited.stderr
    time.sleep(CACHE_SECONDS + 0.5)
    phone.add_media("clip.mp4", os.urandom(1_100_000))
    with pytest.raises(BackendError, match="over this server's limit of 1.0 MB per file"):
        phone.sync()
    for device in (phone, laptop):
        device.close()
