"""Identity guarantees for any client: the real `anki` client and raw HTTP → the gateway → real
stock sync servers, with moto as Cognito (FakeProvider only for an unreachable Cognito).

Each test pins one case of the identity issue with the value it must have: revocation on every
method, no stale cached logins, one user whatever the spelling, one failure budget per user,
verified emails only, "sign out everywhere", and no keys for unsupported protocol versions.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zstandard
from anki.errors import SyncError

from gateway.__main__ import main as gateway_main
from gateway.appkeys import REVALIDATOR
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import ProviderUnavailable
from tests.ankiclient import Client, is_auth_error

PASSWORD = "Correct-Horse-9"


def client(tmp_path: Path, name: str) -> Client:
    return Client(tmp_path / "clients" / name)


def raw(url: str, method: str, key: str = "", body: Any = None, version: int = 11) -> int:
    """POST `<url><method>` as a client that is not Anki would: just the one request."""
    data = zstandard.ZstdCompressor().compress(json.dumps({} if body is None else body).encode())
    header = json.dumps({"v": version, "k": key, "c": "26.09.3,raw,linux", "s": "raw1"})
    request = urllib.request.Request(  # noqa: S310 - loopback http only
        url + method,
        data=data,
        method="POST",
        headers={"anki-sync": header, "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def login_status(url: str, username: str, password: str) -> int:
    return raw(url, "sync/hostKey", body={"u": username, "p": password})


def synced_device(tmp_path: Path, gw: Any, name: str, username: str) -> Client:
    device = client(tmp_path, name)
    device.add_note(f"note of {name}")
    device.login(username, PASSWORD, gw.url)
    device.sync()
    return device


def sync_pushes(device: Client) -> bool:
    """Sync, and tell whether every local change reached the server (none left with usn -1)."""
    device.sync()
    return device.col.db.scalar("select count() from notes where usn = -1") == 0


def status_within(seconds: float, probe: Any, wanted: int) -> tuple[int, float]:
    """Call `probe()` until it answers `wanted` or `seconds` pass: (last status, seconds taken)."""
    started = time.monotonic()
    while True:
        status = probe()
        elapsed = time.monotonic() - started
        if status == wanted or elapsed > seconds:
            return status, elapsed
        time.sleep(0.02)


# -- 1. revocation on every method ------------------------------------------------------------


@pytest.mark.parametrize("change", ["disable", "delete"])
@pytest.mark.parametrize("method", ["sync/download", "sync/upload", "msync/begin"])
def test_a_user_removed_in_cognito_loses_every_method_within_the_recheck_interval(
    cognito, tmp_path, start_gateway, method: str, change: str
) -> None:
    cognito.add_user("dora", PASSWORD, "dora@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"recheck_seconds": 1}))
    device = synced_device(tmp_path, gw, "d", "dora")
    key = device.auth.hkey
    assert raw(gw.url, "sync/download", key) == 200  # the key works
    if change == "disable":
        cognito.disable("dora")
    else:
        cognito.boto.admin_delete_user(UserPoolId=cognito.pool_id, Username="dora")
    time.sleep(1.05)  # due, not overdue: the check runs in the background
    # Only `method`, never sync/meta: a client that is not Anki skips it.
    status, taken = status_within(2.0, lambda: raw(gw.url, method, key), 403)
    assert status == 403
    assert taken < 1.0  # recheck_seconds (already waited) plus one Cognito round trip
    assert gw.registry.get(cognito.subs["dora"]).status == "suspended"
    device.close()


def test_a_request_after_a_long_absence_waits_for_the_check_and_is_refused(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("olaf", PASSWORD, "olaf@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"recheck_seconds": 1}))
    device = synced_device(tmp_path, gw, "o", "olaf")
    cognito.disable("olaf")
    time.sleep(2.1)  # over twice the interval: overdue
    assert raw(gw.url, "sync/download", device.auth.hkey) == 403  # the very first request
    with pytest.raises(SyncError) as info:
        device.sync()
    assert is_auth_error(info.value)
    device.close()


def test_cognito_unreachable_never_logs_anyone_out_and_the_check_is_retried(
    cognito, tmp_path, start_gateway, caplog
) -> None:
    provider = FakeProvider()
    provider.add_user("una", PASSWORD, "una@example.com")
    gw = start_gateway(
        cognito.config(tmp_path / "data", auth={"recheck_seconds": 1}), provider=provider
    )
    device = synced_device(tmp_path, gw, "u", "una")
    provider.fail_with = ProviderUnavailable("Cognito unreachable: EndpointConnectionError")
    time.sleep(2.1)  # overdue: the request waits for a check that cannot reach Cognito
    calls = provider.calls
    assert raw(gw.url, "sync/download", device.auth.hkey) == 200
    assert provider.calls == calls + 1
    device.add_note("written during the outage")
    assert sync_pushes(device)
    time.sleep(1.1)  # retried: after min(60 s, recheck_seconds)
    assert raw(gw.url, "sync/download", device.auth.hkey) == 200
    assert gw.app[REVALIDATOR].postponed >= 2
    assert any(r.getMessage().startswith("revalidation postponed") for r in caplog.records)
    provider.fail_with = None
    provider.disable("una")
    time.sleep(1.1)
    status, _ = status_within(2.0, lambda: raw(gw.url, "sync/download", device.auth.hkey), 403)
    assert status == 403  # once Cognito answers again, the disabled user is refused
    device.close()


# -- 2. no stale logins -----------------------------------------------------------------------


def test_the_old_password_is_refused_once_the_new_one_was_used(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("mover@example.com", "Old-password-1", "mover@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))  # the default cache TTL
    assert login_status(gw.url, "mover@example.com", "Old-password-1") == 200
    cognito.boto.admin_set_user_password(
        UserPoolId=cognito.pool_id,
        Username="mover@example.com",
        Password="New-password-2",
        Permanent=True,
    )
    assert login_status(gw.url, "mover@example.com", "New-password-2") == 200
    assert login_status(gw.url, "mover@example.com", "Old-password-1") == 403


def test_a_user_disabled_in_cognito_cannot_log_in_from_cache_past_its_ttl(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("cara", PASSWORD, "cara@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"cache_ttl_seconds": 1}))
    assert login_status(gw.url, "cara", PASSWORD) == 200
    cognito.disable("cara")
    time.sleep(1.1)
    assert login_status(gw.url, "cara", PASSWORD) == 403


def test_a_re_created_user_never_gets_the_old_accounts_key(
    cognito, tmp_path, start_gateway
) -> None:
    old_sub = cognito.add_user("remy", PASSWORD, "remy@example.com")
    gw = start_gateway(
        cognito.config(tmp_path / "data", auth={"cache_ttl_seconds": 1, "recheck_seconds": 1})
    )
    old = synced_device(tmp_path, gw, "old", "remy")
    cognito.boto.admin_delete_user(UserPoolId=cognito.pool_id, Username="remy")
    new_sub = cognito.add_user("remy", PASSWORD, "remy@example.com")
    assert new_sub != old_sub
    time.sleep(1.1)
    new = client(tmp_path, "new")
    new.login("remy", PASSWORD, gw.url)
    assert new.auth.hkey != old.auth.hkey
    registry = gw.registry
    assert registry.get(new_sub).name == "remy-2"
    assert registry.account_for_key(new.auth.hkey).sub == new_sub
    status, _ = status_within(2.0, lambda: raw(gw.url, "sync/download", old.auth.hkey), 403)
    assert status == 403
    assert registry.get(old_sub).status == "suspended"
    old.close()
    new.close()


# -- 3. and 4. spellings ----------------------------------------------------------------------


def test_every_spelling_of_an_email_reaches_one_account_and_key(
    cognito_email, tmp_path, start_gateway
) -> None:
    sub = cognito_email.add_user("case.user@example.com", PASSWORD, "case.user@example.com")
    gw = start_gateway(cognito_email.config(tmp_path / "data", auth={"cache_ttl_seconds": 1}))
    keys = set()
    for spelling in ("case.user@example.com", "Case.User@example.com", "CASE.USER@EXAMPLE.COM"):
        time.sleep(1.05)  # past the cache: each spelling goes to Cognito (case-sensitive in moto)
        device = client(tmp_path, spelling)
        device.login(spelling, PASSWORD, gw.url)
        keys.add(device.auth.hkey)
        device.close()
    assert len(keys) == 1
    assert gw.registry.account_for_key(keys.pop()).sub == sub
    assert [p.name for p in gw.config.collections_dir.iterdir()] == ["case.user"]


def test_all_spellings_share_one_failure_budget_and_logged_in_devices_keep_syncing(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("victim@example.com", PASSWORD, "victim@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"max_failures_per_user": 3}))
    device = synced_device(tmp_path, gw, "v", "victim@example.com")
    for _ in range(3):
        assert login_status(gw.url, "victim@example.com", "wrong-guess") == 403
    for spelling in (
        "Victim@example.com",
        "VICTIM@EXAMPLE.COM",
        " victim@example.com ",
        "ｖｉｃｔｉｍ@example.com",  # full-width letters (NFKC)
        "victim@example.com",
    ):
        assert login_status(gw.url, spelling, "another-guess") == 429, spelling
        assert login_status(gw.url, spelling, PASSWORD) == 429, spelling
    # The device that logged in before the attack keeps syncing with its key.
    device.add_note("during the lockout")
    assert sync_pushes(device)
    device.close()


# -- 6. verified emails only ------------------------------------------------------------------


def test_an_unverified_email_neither_names_nor_is_stored_for_an_account(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("mallory", PASSWORD, "victim@example.com", email_verified=False)
    cognito.add_user("victim", PASSWORD + "v", "victim@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    assert login_status(gw.url, "mallory", PASSWORD) == 200
    assert login_status(gw.url, "victim", PASSWORD + "v") == 200
    by_user = {a.cognito_username: a for a in gw.registry.all()}
    assert (by_user["mallory"].name, by_user["mallory"].email) == ("mallory", None)
    assert (by_user["victim"].name, by_user["victim"].email) == ("victim", "victim@example.com")


# -- 7. sign out everywhere -------------------------------------------------------------------


def test_sign_out_refuses_every_device_gives_new_keys_and_survives_a_restart(
    cognito, tmp_path, start_gateway, monkeypatch, capsys
) -> None:
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    cognito.add_user("bob", PASSWORD, "bob@example.com")
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    phone = synced_device(tmp_path, gw, "phone", "alice")
    laptop = client(tmp_path, "laptop")
    laptop.login("alice", PASSWORD, gw.url)
    bob = synced_device(tmp_path, gw, "bob", "bob")
    old_key = phone.auth.hkey
    assert laptop.auth.hkey == old_key

    # The command line, on the registry file, as an operator runs it beside the gateway.
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", cognito.pool_id)
    monkeypatch.setenv("GATEWAY_COGNITO_CLIENT_ID", cognito.client_id)
    assert gateway_main(["accounts", "sign-out", "alice"]) == 0
    assert "alice: signed out everywhere (key generation 1)" in capsys.readouterr().out

    for device in (phone, laptop):
        with pytest.raises(SyncError) as info:
            device.sync()
        assert is_auth_error(info.value)
    assert raw(gw.url, "msync/begin", old_key) == 403
    bob.add_note("bob is untouched")
    assert sync_pushes(bob)

    # The next login (a cached one, even) gets a new key, from a worker with the new password.
    phone.login("alice", PASSWORD, gw.url)
    new_key = phone.auth.hkey
    assert new_key != old_key
    phone.add_note("after signing out")
    assert sync_pushes(phone)

    gw.stop()
    gw = start_gateway(config)
    assert raw(gw.url, "sync/download", new_key) == 200
    assert raw(gw.url, "sync/download", old_key) == 403
    assert gw.registry.get_by_name("alice").key_generation == 1
    for device in (phone, laptop, bob):
        device.close()


# -- 8. protocol versions ---------------------------------------------------------------------


@pytest.mark.parametrize("version, status", [(0, 400), (7, 400), (12, 400), (999, 400), (11, 200)])
def test_login_refuses_the_sync_versions_every_later_request_would_be_refused_with(
    cognito, tmp_path, start_gateway, version: int, status: int
) -> None:
    cognito.add_user("vera", PASSWORD, "vera@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    assert raw(gw.url, "sync/hostKey", body={"u": "vera", "p": PASSWORD}, version=version) == status
    assert gw.registry.count() == (1 if status == 200 else 0)


def test_a_sign_out_seen_by_another_gateway_process_never_answers_403_and_heals(
    cognito, tmp_path, start_gateway, monkeypatch
) -> None:
    cognito.add_user("alice", PASSWORD, "alice@example.com")
    config = cognito.config(tmp_path / "data", auth={"cache_ttl_seconds": 1})
    first = start_gateway(config)  # runs alice's worker after her login
    second = start_gateway(config)  # shares the data folder and uses that worker
    device = synced_device(tmp_path, first, "d", "alice")
    old_key = device.auth.hkey
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", cognito.pool_id)
    monkeypatch.setenv("GATEWAY_COGNITO_CLIENT_ID", cognito.client_id)
    assert gateway_main(["accounts", "sign-out", "alice"]) == 0
    # The second process cannot stop the first one's worker: a retry, never a logout.
    assert login_status(second.url, "alice", PASSWORD) == 503
    # The first process's reaper retires the old-generation worker within its period (10 s).
    status, taken = status_within(15.0, lambda: login_status(second.url, "alice", PASSWORD), 200)
    assert status == 200, taken
    assert raw(second.url, "sync/download", old_key) == 403
    device.close()


# -- sign-in honesty: credentials no Cognito user can have ------------------------------------


def test_impossible_passwords_get_the_stock_403_without_cognito_and_leave_the_budget_alone(
    cognito, tmp_path, start_gateway
) -> None:
    from gateway.appkeys import PROVIDER

    cognito.add_user("wes", PASSWORD, "wes@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data", auth={"max_failures_per_user": 3}))
    impossible = ["", " " + PASSWORD, PASSWORD + " ", PASSWORD + "\n", "\t", "short", "x" * 257]
    # Empty was a 400 ("please use Check Database" in Anki); the stock server says 403.
    assert [login_status(gw.url, "wes", p) for p in impossible] == [403] * len(impossible)
    assert gw.app[PROVIDER].calls == 0  # not one reached Cognito (nor its lockout)
    # Seven refusals, but none about wes's password: the real one still works at once.
    device = client(tmp_path, "wes")
    device.login("wes", PASSWORD, gw.url)
    assert gw.app[PROVIDER].calls == 1
    device.close()


def test_a_user_re_created_within_the_cache_lifetime_never_gets_the_deleted_users_account(
    cognito, tmp_path, start_gateway
) -> None:
    # The default cache TTL (60 s), and no re-check due: only the cache rule stands in the way.
    old_sub = cognito.add_user("rita", PASSWORD, "rita@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    old = synced_device(tmp_path, gw, "old", "rita")
    cognito.boto.admin_delete_user(UserPoolId=cognito.pool_id, Username="rita")
    new_sub = cognito.add_user("rita", PASSWORD, "rita@example.com")
    assert new_sub != old_sub
    new = client(tmp_path, "new")
    new.login("rita", PASSWORD, gw.url)  # at once: the old login is still in the cache
    assert new.auth.hkey != old.auth.hkey
    assert gw.registry.account_for_key(new.auth.hkey).sub == new_sub
    assert gw.registry.get(new_sub).name == "rita-2"
    # A hit for a sub Cognito still has is answered from the cache: one lookup by sub, no
    # second password check.
    from gateway.appkeys import PROVIDER

    calls = gw.app[PROVIDER].calls
    again = client(tmp_path, "again")
    again.login("rita", PASSWORD, gw.url)
    assert again.auth.hkey == new.auth.hkey
    assert gw.app[PROVIDER].calls == calls + 1
    for device in (old, new, again):
        device.close()
