"""`accounts prune` end to end: real `anki` clients synced through the gateway to stock servers,
the portal's sign-in, moto as Cognito. A dry run lists and changes nothing; --delete removes only
the accounts nobody has seen for N days, through the portal's deletion path.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from anki.errors import SyncError

from gateway.appkeys import POOL
from gateway.cli import tree
from gateway.registry import REGISTRY_FILE
from tests.ankiclient import Client, is_auth_error
from tests.export.conftest import portal_gateway, portal_pool  # noqa: F401 - fixtures
from tests.portal.conftest import PORTAL_PASSWORD
from tests.portal.test_pages import post_form, signed_in_session
from tests.test_identity_e2e import login_status

DAY = 86_400


def synced(tmp_path: Path, gw: Any, email: str) -> Client:
    signed_in_session(gw.url + "account/", email)
    device = Client(tmp_path / email)
    device.add_note(f"note of {email}")
    device.add_media(f"{email}.jpg", b"\xff\xd8 media" * 100)
    device.login(email, PORTAL_PASSWORD, gw.url)
    device.sync()
    return device


def age(gw: Any, name: str, days: float) -> None:
    """Make the account look untouched for `days` (creation, last sync, last check)."""
    then = time.time() - days * DAY
    with sqlite3.connect(gw.config.data_dir / REGISTRY_FILE) as db:
        db.execute(
            "UPDATE accounts SET created_at = ?, last_seen = ?, checked_at = ? WHERE name = ?",
            (then, then, then, name),
        )


def test_prune_lists_first_then_deletes_only_accounts_unseen_for_the_days(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw, _ = portal_gateway()
    gone = synced(tmp_path, gw, "gone@example.com")
    kept = synced(tmp_path, gw, "kept@example.com")
    visitor = synced(tmp_path, gw, "visitor@example.com")
    for name in ("gone", "visitor"):
        age(gw, name, 100)
    age(gw, "kept", 29)
    # The visitor only signs in on the portal: that is being seen too.
    post_form(
        requests.Session(),
        gw.url + "account/signin",
        {"email": "visitor@example.com", "password": PORTAL_PASSWORD},
    )
    assert "gone" in gw.app[POOL].running()  # its sync server still runs

    # A dry run by default: listed, nothing changed.
    assert tree.run(["accounts", "prune", "--inactive-days", "30"], gw.config) == 0
    out = capsys.readouterr().out
    assert "would delete\tgone\t" in out and "kept" not in out and "visitor" not in out
    assert "dry run: 1 account(s)" in out
    assert gw.registry.get_by_name("gone") is not None
    gone_folder = gw.config.collections_dir / "gone"
    assert (gone_folder / "collection.anki2").is_file()

    assert (
        tree.run(
            ["accounts", "prune", "--inactive-days", "30", "--delete", "--wait", "5"], gw.config
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "deleted\tgone\t" in out and "1 account(s) deleted, 0 not" in out
    assert gw.registry.get_by_name("gone") is None
    assert not gone_folder.exists()
    assert "gone" not in gw.app[POOL].running()
    with pytest.raises(SyncError) as info:
        gone.sync()
    assert is_auth_error(info.value)
    # The Cognito user went too (portal.delete_cognito_user: delete): no way back in.
    with pytest.raises(SyncError):
        gone.login("gone@example.com", PORTAL_PASSWORD, gw.url)
    # The others keep syncing, their data intact.
    for device in (kept, visitor):
        device.add_note("after the prune")
        device.sync()
        assert gw.registry.get_by_name(device.folder.name.split("@")[0]) is not None
    # Counted: the running gateway's /metrics reads the last run.
    from gateway.ops import gauges

    scraped = gauges.render(gw.app, None).decode()
    assert 'gateway_prune_last_run_accounts{outcome="deleted"} 1.0' in scraped
    for device in (gone, kept, visitor):
        device.close()


def test_prune_refuses_less_than_a_day(portal_gateway: Any) -> None:  # noqa: F811
    gw, _ = portal_gateway()
    with pytest.raises(SystemExit) as info:
        tree.run(["accounts", "prune", "--inactive-days", "0", "--delete"], gw.config)
    assert info.value.code == 2


def test_a_first_login_racing_the_prune_of_its_account_leaves_no_half_account(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The prune decided (the account unseen for 100 days, read again just before) while the
    owner's first Anki login is half-way: past Cognito and the registry, about to make the
    folder. The prune removes the account; the login must not then put a folder (and a worker,
    and a key) back for an account with no registry row; the owner's next login works."""
    import threading

    from gateway.auth import login as login_module

    gw, _ = portal_gateway(portal={"delete_cognito_user": "keep"})
    signed_in_session(gw.url + "account/", "late@example.com")  # signed up, never synced
    age(gw, "late", 100)
    real_make = login_module.make_account_dir
    pruned: list[int] = []

    def make_after_the_prune(collections_dir: Path, name: str) -> Path:
        if name == "late" and not pruned:
            command = ["accounts", "prune", "--inactive-days", "30", "--delete", "--wait", "5"]
            thread = threading.Thread(target=lambda: pruned.append(tree.run(command, gw.config)))
            thread.start()
            thread.join(60)
        return real_make(collections_dir, name)

    monkeypatch.setattr(login_module, "make_account_dir", make_after_the_prune)
    device = Client(tmp_path / "late")
    device.add_note("first note")
    with pytest.raises(SyncError) as info:
        device.login("late@example.com", PORTAL_PASSWORD, gw.url)
    assert not is_auth_error(info.value)  # "try again", not a logout
    assert pruned == [0]
    assert "deleted\tlate\t" in capsys.readouterr().out
    # Never half: no registry row, so no folder, no worker, no key either.
    assert gw.registry.get_by_name("late") is None
    assert not (gw.config.collections_dir / "late").exists()
    assert "late" not in gw.app[POOL].running()
    # The next login works (the Cognito user was kept): a new account, and it syncs.
    device.login("late@example.com", PORTAL_PASSWORD, gw.url)
    device.sync()
    (account,) = gw.registry.all()
    assert (gw.config.collections_dir / account.name / "collection.anki2").is_file()
    assert device.note_fronts() == {"first note"}
    device.close()


def _prune_with_a_login_at(
    gw: Any, monkeypatch: pytest.MonkeyPatch, where: str, device: Client, email: str
) -> tuple[SyncError | None, int]:
    """Run `accounts prune --delete` whose step `where` (a name in retention/prune.py) first
    logs `device` in, once; returns the login's SyncError (None: it got a key) and the HTTP
    status a bare login request gets right after it, still inside the prune."""
    from gateway.retention import prune as prune_module

    real = getattr(prune_module, where)
    logins: list[tuple[SyncError | None, int]] = []

    def login_first(*args: Any) -> Any:
        if not logins:
            error = None
            try:
                device.login(email, PORTAL_PASSWORD, gw.url)
            except SyncError as failed:
                error = failed
            logins.append((error, login_status(gw.url, email, PORTAL_PASSWORD)))
        return real(*args)

    monkeypatch.setattr(prune_module, where, login_first)
    command = ["accounts", "prune", "--inactive-days", "30", "--delete", "--wait", "5"]
    assert tree.run(command, gw.config) == 0
    (outcome,) = logins
    return outcome


def test_a_login_after_the_prune_listed_its_account_wins_and_the_account_stays(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The login lands after the prune listed the account (unseen for 100 days), before the
    prune claims it: the login is a sighting, so the claim fails and the account is kept."""
    gw, _ = portal_gateway(portal={"delete_cognito_user": "keep"})
    device = synced(tmp_path, gw, "early@example.com")
    age(gw, "early", 100)
    error, _ = _prune_with_a_login_at(gw, monkeypatch, "inactive", device, "early@example.com")
    assert error is None
    assert "skipped\tearly\t" in capsys.readouterr().out
    account = gw.registry.get_by_name("early")
    assert account is not None and account.active
    device.add_note("after the prune")
    device.sync()
    assert (gw.config.collections_dir / "early" / "collection.anki2").is_file()
    device.close()


def test_a_login_after_the_prunes_last_read_either_wins_or_waits_for_a_whole_deletion(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The window the prune's last read used to leave: the prune decided (the account unseen
    for 100 days, read again) and is about to delete when its owner logs in. Either the login
    wins (a key, and the account stays) or it gets 503 (never a logout) and the account is
    removed whole; never a key for an account the prune then removes. The next login after
    the deletion makes a fresh account (the Cognito user was kept)."""
    gw, _ = portal_gateway(portal={"delete_cognito_user": "keep"})
    device = synced(tmp_path, gw, "racer@example.com")
    age(gw, "racer", 100)
    error, status = _prune_with_a_login_at(
        gw, monkeypatch, "delete_account", device, "racer@example.com"
    )
    out = capsys.readouterr().out
    if error is None:  # the login won: the account stays, and syncs
        assert "skipped\tracer\t" in out and status == 200
        device.sync()
        assert gw.registry.get_by_name("racer") is not None
    else:  # the prune won: "try again later", and nothing of the account is left
        assert not is_auth_error(error)
        assert status == 503  # every login until the deletion is done
        assert "deleted\tracer\t" in out
        assert gw.registry.get_by_name("racer") is None
        assert not (gw.config.collections_dir / "racer").exists()
        assert "racer" not in gw.app[POOL].running()
        device.login("racer@example.com", PORTAL_PASSWORD, gw.url)
        (fresh,) = gw.registry.all()
        assert fresh.name != "racer" and fresh.active
        # Its collection goes up whole to the new, empty account (media: Anki's next sync).
        device.sync(media=False)
        assert (gw.config.collections_dir / fresh.name / "collection.anki2").is_file()
    device.close()


def test_an_account_a_killed_prune_claimed_waits_with_503_and_the_next_run_removes_it(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A prune killed after its claim (status "deleting" in the registry, nothing removed):
    logins are told to try again (503), never logged out, and not revived; the next run finishes
    the removal, although the account's times are recent; then the next login makes a fresh
    account (the Cognito user was kept)."""
    gw, _ = portal_gateway(portal={"delete_cognito_user": "keep"})
    device = synced(tmp_path, gw, "halfway@example.com")
    with sqlite3.connect(gw.config.data_dir / REGISTRY_FILE) as db:  # what the claim wrote
        db.execute("UPDATE accounts SET status = 'deleting' WHERE name = 'halfway'")
    assert login_status(gw.url, "halfway@example.com", PORTAL_PASSWORD) == 503
    with pytest.raises(SyncError) as info:
        device.sync()  # its key waits too: not a logout
    assert not is_auth_error(info.value)
    with pytest.raises(SyncError) as info:
        device.login("halfway@example.com", PORTAL_PASSWORD, gw.url)
    assert not is_auth_error(info.value)
    assert gw.registry.get_by_name("halfway").status == "deleting"  # not revived

    assert tree.run(["accounts", "prune", "--inactive-days", "30"], gw.config) == 0
    assert "would delete\thalfway\t" in capsys.readouterr().out
    command = ["accounts", "prune", "--inactive-days", "30", "--delete", "--wait", "5"]
    assert tree.run(command, gw.config) == 0
    assert "deleted\thalfway\t" in capsys.readouterr().out
    assert gw.registry.get_by_name("halfway") is None
    assert not (gw.config.collections_dir / "halfway").exists()
    assert login_status(gw.url, "halfway@example.com", PORTAL_PASSWORD) == 200
    (fresh,) = gw.registry.all()
    assert fresh.name != "halfway" and fresh.active
    device.close()


def test_when_cognito_cannot_be_told_the_claim_is_released(
    portal_gateway: Any,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Cognito unreachable during the removal (a fake: moto cannot be made unavailable): the
    account is not removed and gets back its status, so its owner's logins work meanwhile."""
    from gateway.errors import Unavailable
    from gateway.portal.directory import CognitoDirectory

    async def unreachable(self: Any, username: str, action: str) -> None:
        raise Unavailable("Cognito unreachable")

    gw, _ = portal_gateway()
    device = synced(tmp_path, gw, "stays@example.com")
    age(gw, "stays", 100)
    monkeypatch.setattr(CognitoDirectory, "remove", unreachable)
    command = ["accounts", "prune", "--inactive-days", "30", "--delete", "--wait", "5"]
    assert tree.run(command, gw.config) == 3
    assert "not deleted\tstays\t" in capsys.readouterr().out
    assert gw.registry.get_by_name("stays").status == "active"
    device.login("stays@example.com", PORTAL_PASSWORD, gw.url)
    device.sync()
    device.close()
