"""End to end: the real `anki` client → the gateway → real stock sync servers, moto as Cognito."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from anki.errors import SyncError

from gateway.appkeys import POOL, PROVIDER
from gateway.forwarding.upstream import Upstream
from tests.ankiclient import Client, Required, is_auth_error
from tests.conftest import live_worker_pids

PASSWORD = "Correct-Horse-9"


def make_client(tmp_path: Path, name: str) -> Client:
    return Client(tmp_path / "clients" / name)


def test_round_trip_full_upload_download_then_incremental(cognito, tmp_path, start_gateway):
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))

    a = make_client(tmp_path, "a")
    a.add_note("first")
    a.add_note("second")
    media_name = a.add_media("picture.png", b"\x89PNG fake image bytes" * 100)
    a.login("alice", PASSWORD, gw.url)
    assert a.sync() == Required.FULL_UPLOAD  # empty server, non-empty client

    b = make_client(tmp_path, "b")
    b.login("alice", PASSWORD, gw.url)
    assert b.sync() == Required.FULL_DOWNLOAD
    assert b.note_fronts() == a.note_fronts()
    assert b.col.note_count() == 3
    assert b.media_bytes(media_name) == a.media_bytes(media_name)

    a.add_note("third, incremental")
    a.sync()  # a normal sync completes inside the call
    b.sync()
    assert "third, incremental" in b.note_fronts()
    assert b.col.note_count() == 4

    folder = gw.config.collections_dir / "alice"
    assert (folder / "collection.anki2").is_file()
    assert (folder / "media" / media_name).read_bytes() == a.media_bytes(media_name)
    for c in (a, b):
        c.close()


def test_two_users_sync_at_once_and_never_see_each_other(cognito, tmp_path, start_gateway):
    for user in ("ann", "ben"):
        cognito.add_user(user, PASSWORD, f"{user}@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    errors: list[BaseException] = []

    def work(user: str) -> None:
        try:
            up = make_client(tmp_path, f"{user}-up")
            for i in range(20):
                up.add_note(f"{user} note {i}")
            up.login(user, PASSWORD, gw.url)
            up.sync()
            up.add_note(f"{user} later")
            up.sync()
            down = make_client(tmp_path, f"{user}-down")
            down.login(user, PASSWORD, gw.url)
            down.sync()
            fronts = down.note_fronts()
            assert len(fronts) == 21
            assert all(f.startswith(user) for f in fronts)
            up.close()
            down.close()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in ("ann", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    folders = sorted(p.name for p in gw.config.collections_dir.iterdir())
    assert folders == ["ann", "ben"]
    stats = gw.app[POOL].stats()
    assert stats["live"] == 2


def test_login_by_email_in_an_email_username_pool(cognito_email, tmp_path, start_gateway):
    sub = cognito_email.add_user("carol@example.com", PASSWORD, "carol@example.com")
    gw = start_gateway(cognito_email.config(tmp_path / "data"))
    c = make_client(tmp_path, "c")
    c.add_note("hello")
    c.login("  carol@example.com ", PASSWORD, gw.url)  # Anki strips the username
    c.sync()
    account = gw.registry.get(sub)
    assert account is not None and account.name == "carol"
    assert (gw.config.collections_dir / "carol" / "collection.anki2").is_file()
    c.close()


def test_wrong_password_is_an_auth_error(cognito, tmp_path, start_gateway):
    cognito.add_user("dave", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data"))
    c = make_client(tmp_path, "d")
    with pytest.raises(SyncError) as info:
        c.login("dave", "wrong-password", gw.url)
    assert is_auth_error(info.value)
    assert list(gw.config.collections_dir.iterdir()) == []  # nothing created
    c.close()


def test_wrong_password_right_after_a_cached_success_is_refused(cognito, tmp_path, start_gateway):
    cognito.add_user("erin", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data"))
    c = make_client(tmp_path, "e")
    c.login("erin", PASSWORD, gw.url)
    with pytest.raises(SyncError) as info:
        c.login("erin", PASSWORD + "x", gw.url)
    assert is_auth_error(info.value)
    c.close()


def test_cached_login_makes_one_user_read_no_password_check_and_returns_the_same_key(
    cognito, tmp_path, start_gateway
):
    """A cache hit stands only once Cognito, asked by sub, still has the user under that name
    (docs/security/sign-in.md: a deleted and re-created user never gets the old account): one
    read, no AdminInitiateAuth, and the worker is not needed."""
    cognito.add_user("fay", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data"))
    c = make_client(tmp_path, "f")
    first = c.login("fay", PASSWORD, gw.url).hkey
    provider = gw.app[PROVIDER]
    calls = provider.calls
    # Stop the worker: a cached login must not need it either.
    gw.call(gw.app[POOL].close())
    second = c.login("fay", PASSWORD, gw.url).hkey
    assert provider.calls == calls + 1
    assert second == first
    c.close()


def test_disabled_user_is_refused_once_the_cache_ttl_has_passed(cognito, tmp_path, start_gateway):
    cognito.add_user("gus", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"cache_ttl_seconds": 1}))
    c = make_client(tmp_path, "g")
    c.login("gus", PASSWORD, gw.url)
    cognito.disable("gus")
    time.sleep(1.2)
    with pytest.raises(SyncError) as info:
        c.login("gus", PASSWORD, gw.url)
    assert is_auth_error(info.value)
    c.close()


def test_cognito_outage_is_a_server_error_not_an_auth_error(tmp_path, start_gateway):
    """A real network failure: Cognito "lives" on a closed loopback port. No mock_aws here."""
    from tests.conftest import CognitoPool

    pool = CognitoPool(boto=None, pool_id="eu-west-1_Outage1", client_id="c", client_secret=None)
    config = pool.config(
        tmp_path / "data",
        cognito={
            "endpoint_url": "http://127.0.0.1:9",
            "local_stand_in": True,
            "connect_timeout": 0.5,
        },
    )
    gw = start_gateway(config)
    c = make_client(tmp_path, "h")
    with pytest.raises(SyncError) as info:
        c.login("anyone", PASSWORD, gw.url)
    assert not is_auth_error(info.value)
    assert "503" in str(info.value) or "problem" in str(info.value).lower()
    c.close()


def test_existing_key_keeps_working_after_a_gateway_restart(cognito, tmp_path, start_gateway):
    cognito.add_user("hal", PASSWORD)
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    c = make_client(tmp_path, "i")
    c.add_note("before restart")
    c.login("hal", PASSWORD, gw.url)
    c.sync()
    gw.stop()
    assert live_worker_pids(config.collections_dir) == []

    gw2 = start_gateway(config)
    c.auth.endpoint = gw2.url  # a new port; the key is what matters
    calls = gw2.app[PROVIDER].calls
    c.add_note("after restart")
    c.sync()  # no login in between
    assert gw2.app[PROVIDER].calls == calls
    other = make_client(tmp_path, "i2")
    other.login("hal", PASSWORD, gw2.url)
    other.sync()
    assert other.note_fronts() == {"before restart", "after restart"}
    for client in (c, other):
        client.close()


@pytest.mark.parametrize(
    ("username", "expected_folder"),
    [
        ("../x", "x"),
        ("a/b", "a-b"),
        ("Jürgen.Ö", "jurgen.o"),
        ("long" + "g" * 120, "long" + "g" * 28),
    ],
)
def test_odd_usernames_get_safe_folders_inside_the_data_folder(
    cognito, tmp_path, start_gateway, username, expected_folder
):
    cognito.add_user(username, PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data"))
    c = make_client(tmp_path, "odd")
    c.add_note("odd")
    c.login(username, PASSWORD, gw.url)
    c.sync()
    collections = gw.config.collections_dir.resolve()
    folders = [p for p in collections.iterdir()]
    assert [p.name for p in folders] == [expected_folder]
    assert (folders[0] / "collection.anki2").is_file()
    assert not (tmp_path / "x").exists() and not (tmp_path / "data" / "x").exists()
    c.close()


def test_nul_in_username_is_refused_cleanly(cognito, tmp_path, start_gateway):
    gw = start_gateway(cognito.config(tmp_path / "data"))
    c = make_client(tmp_path, "nul")
    with pytest.raises(SyncError) as info:
        c.login("evil\x00name", PASSWORD, gw.url)
    assert is_auth_error(info.value)
    assert list(gw.config.collections_dir.iterdir()) == []
    c.close()


def test_worker_killed_mid_sync_is_a_server_error_and_the_next_sync_works(
    cognito, tmp_path, start_gateway, monkeypatch
):
    cognito.add_user("ivy", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data"))
    a = make_client(tmp_path, "ivy-a")
    for i in range(5):
        a.add_note(f"kept {i}")
    a.login("ivy", PASSWORD, gw.url)
    a.sync(media=False)

    # A large full upload keeps the worker busy long enough to kill it in the middle.
    filler = os.urandom(6_000_000).hex()
    for i in range(12):
        a.add_note(f"big {i}", filler[i * 500_000 : (i + 1) * 500_000])
    a.col.mod_schema(check=False)  # forces a full sync, like "Check Database" on a schema change
    killed: list[int] = []
    # The worker is stopped (SIGSTOP) as the full upload is handed to it and killed a moment
    # later, so it dies with the upload in its hands whatever the machine's load (a killer thread
    # racing the upload lost on a busy CI host: "DID NOT RAISE").
    to_worker = Upstream.to_worker

    async def watched(self: Upstream, request: Any, upstream_path: str, *args: Any, **kw: Any):
        if upstream_path == "sync/upload" and not killed:
            pids = live_worker_pids(gw.config.collections_dir)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            killed.extend(pids)
            asyncio.get_running_loop().call_later(
                0.3, lambda: [os.kill(pid, signal.SIGKILL) for pid in pids]
            )
        return await to_worker(self, request, upstream_path, *args, **kw)

    monkeypatch.setattr(Upstream, "to_worker", watched)
    with pytest.raises(SyncError) as info:
        a.sync(media=False)
    assert killed
    assert not is_auth_error(info.value)

    # Next sync works on a fresh worker, and the server's collection is intact.
    a.sync(media=False)
    b = make_client(tmp_path, "ivy-b")
    b.login("ivy", PASSWORD, gw.url)
    b.sync(media=False)
    assert b.note_fronts() == a.note_fronts()
    assert b.col.note_count() == 17
    a.close()
    b.close()


def test_user_disabled_in_cognito_loses_sync_access_and_regains_it(
    cognito, tmp_path, start_gateway
):
    cognito.add_user("jo", PASSWORD)
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"recheck_seconds": 1}))
    c = make_client(tmp_path, "jo")
    c.add_note("x")
    c.login("jo", PASSWORD, gw.url)
    c.sync()
    cognito.disable("jo")
    time.sleep(1.1)
    with contextlib.suppress(SyncError):
        c.sync()  # starts the background re-check; may still pass
    time.sleep(0.2)
    with pytest.raises(SyncError) as info:
        c.sync()
    assert is_auth_error(info.value)

    cognito.boto.admin_enable_user(UserPoolId=cognito.pool_id, Username="jo")
    c.login("jo", PASSWORD, gw.url)
    c.sync()
    c.close()
