"""Download my data, end to end: the real `anki` client syncs notes and media through the gateway
to the stock server; the account's .colpkg comes from the portal (signed in) and from
`python -m gateway accounts export`, while the account's sync server runs; each is imported into
a fresh collection with the `anki` package and compared note for note and file for file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from anki._backend import RustBackend
from anki.collection import Collection

from gateway.appkeys import POOL
from tests.ankiclient import Client, Required
from tests.portal.conftest import PORTAL_PASSWORD
from tests.portal.test_pages import csrf, signed_in_session

ROOT = Path(__file__).resolve().parents[2]
MEDIA = {"photo.jpg": b"\xff\xd8 not really a jpeg" * 700, "sound.mp3": os.urandom(150_000)}


def imported(package: Path, folder: Path) -> tuple[set[str], dict[str, bytes]]:
    """Import `package` as Anki does into a fresh profile folder: (note fronts, media files)."""
    folder.mkdir(parents=True)
    RustBackend().import_collection_package(
        col_path=str(folder / "collection.anki2"),
        backup_path=str(package),
        media_folder=str(folder / "collection.media"),
        media_db=str(folder / "collection.media.db2"),
    )
    col = Collection(str(folder / "collection.anki2"))
    try:
        fronts = {col.get_note(nid)["Front"] for nid in col.find_notes("")}
    finally:
        col.close()
    media = {p.name: p.read_bytes() for p in (folder / "collection.media").iterdir()}
    return fronts, media


def export_form(session: requests.Session, base: str) -> dict[str, str]:
    return {"export-csrf_token": csrf(session.get(base, timeout=30).text, "export-")}


def cli_export(gw: Any, name: str, target: Path) -> subprocess.CompletedProcess[str]:
    cognito = gw.config.cognito
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "PYTHONPATH": str(ROOT),
        "GATEWAY_DATA_DIR": str(gw.config.data_dir),
        "GATEWAY_COGNITO_USER_POOL_ID": cognito.user_pool_id,
        "GATEWAY_COGNITO_CLIENT_ID": cognito.client_id,
        "GATEWAY_COGNITO_REGION": cognito.region or "eu-west-1",
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway", "accounts", "export", name, "--to", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_download_my_data_and_the_export_command_give_a_package_anki_imports_whole(
    portal_gateway: Any, tmp_path: Path
) -> None:
    gw, _ = portal_gateway(portal={"exports_per_day": 2})
    base = gw.url + "account/"
    owner = signed_in_session(base, "owner@example.com")
    device = Client(tmp_path / "device")
    for front in ("one", "two", "three"):
        device.add_note(front)
    for name, data in MEDIA.items():
        device.add_media(name, data)
    device.login("owner@example.com", PORTAL_PASSWORD, gw.url)
    assert device.sync() == Required.FULL_UPLOAD
    device.add_note("four, in a normal sync")
    assert device.sync() == Required.NO_CHANGES
    fronts = device.note_fronts()
    assert len(fronts) == 6  # three, four, and the two media notes
    account = gw.registry.get_by_name("owner")
    assert account.name in gw.app[POOL].running()  # its sync server runs: the export stops it

    # The portal: a POST with the form's token, answered with the package as an attachment.
    answer = owner.post(base + "export", data=export_form(owner, base), timeout=120, stream=True)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"].startswith('attachment; filename="owner-')
    assert answer.headers["Cache-Control"] == "no-store"
    package = tmp_path / "portal.colpkg"
    with package.open("wb") as out:
        for chunk in answer.iter_content(65536):
            out.write(chunk)
    assert package.stat().st_size == int(answer.headers["Content-Length"])
    assert imported(package, tmp_path / "from-portal") == (fronts, MEDIA)
    assert not any((gw.config.data_dir / "export-scratch").iterdir())  # nothing left behind

    # The device keeps syncing afterwards (its server was stopped for the copy, and restarts).
    device.add_note("five, after the export")
    assert device.sync() == Required.NO_CHANGES
    fronts = device.note_fronts()

    # The operator's command, in a process of its own, while the gateway runs.
    target = tmp_path / "cli.colpkg"
    done = cli_export(gw, "owner", target)
    assert done.returncode == 0, done.stderr
    assert "exported to" in done.stdout
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert imported(target, tmp_path / "from-cli") == (fronts, MEDIA)
    again = cli_export(gw, "owner", target)
    assert again.returncode == 2  # never overwrites a file
    assert cli_export(gw, "nobody", tmp_path / "x.colpkg").returncode == 1

    # The daily limit (2 here): the third export is refused with a message, no file.
    second = owner.post(base + "export", data=export_form(owner, base), timeout=120)
    assert second.status_code == 200 and second.content[:2] == b"PK"  # a zip
    refused = owner.post(base + "export", data=export_form(owner, base), timeout=30)
    assert "as often as allowed today" in refused.text
    device.close()


def test_an_export_is_only_ever_the_signed_in_owners_own(portal_gateway: Any) -> None:
    gw, _ = portal_gateway()
    base = gw.url + "account/"
    mallory = signed_in_session(base, "mallory@example.com")
    # Nothing in the request can name another account: extra fields and query strings are
    # ignored; the session's account has never synced, so there is nothing to export.
    form = {**export_form(mallory, base), "name": "victim", "account": "../victim"}
    answer = mallory.post(base + "export?name=victim&sub=x", data=form, timeout=30)
    assert "nothing to download yet" in answer.text
    assert "octet-stream" not in answer.headers.get("Content-Type", "")
    # Without the form's token (a cross-site form): no export.
    forged = mallory.post(base + "export", data={"export-csrf_token": "forged"}, timeout=30)
    assert "That form had expired" in forged.text
    # Without a session: sent to sign in. GET is not an export.
    stranger = requests.Session()
    assert stranger.post(base + "export", data=form, timeout=30).url.startswith(base + "signin")
    assert mallory.get(base + "export", timeout=30).status_code == 405
