"""An export where it meets a backup and a restore of the same account, end to end: the real
`anki` client syncs through the gateway to the stock server, the portal's "Download my data" and
`accounts export` run while a backup or a restore holds the account, and a restore runs while an
export holds it. Each waits for nothing it cannot have: it is refused at once, retryably (the
portal's "try again in a minute", the command's exit 3, a device's request 503 with
Retry-After, never 403); the package is whole, and the restore all accounts or none.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import zstandard

from gateway.backup import gate, quiesce, swap
from gateway.backup.restore import restore
from gateway.backup.snapshot import BackupError, take
from gateway.backup.store import LocalStore
from gateway.export import job
from gateway.workers.lock import RESTORING
from tests.ankiclient import Client, Required
from tests.backup.test_restore import folder_state
from tests.export.test_export import MEDIA, cli_export, export_form, imported
from tests.portal.conftest import PORTAL_PASSWORD
from tests.portal.test_pages import signed_in_session
from tests.test_identity_e2e import sync_pushes

BUSY = "The service is busy (a backup or other downloads). Try again in a minute."


def sync_meta(url: str, hkey: str) -> requests.Response:
    """One `sync/meta` as Anki sends it (what a device's next sync begins with)."""
    body = zstandard.ZstdCompressor().compress(json.dumps({"v": 11, "cv": "x"}).encode())
    header = json.dumps({"v": 11, "k": hkey, "c": "26.09.3,seams,linux", "s": "seams"})
    return requests.post(
        url + "sync/meta",
        data=body,
        headers={"anki-sync": header, "Content-Type": "application/octet-stream"},
        timeout=30,
    )


class Paused:
    """Wraps `function` so that its first call waits inside until `go()`; `entered` is set
    once it is there."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.entered = threading.Event()
        self._go = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        assert self._go.wait(60), "never let go"
        return self.function(*args, **kwargs)

    def go(self) -> None:
        self._go.set()


def in_thread(function: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `function` in a thread; the list gets its result or its exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(function(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_an_export_meets_a_backup_and_a_restore_of_its_account_and_neither_waits_nor_tears(
    portal_gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate, "HOLD_SECONDS", 1.0)  # a device's held request: 503 after 1 s
    gw, _ = portal_gateway(portal={"exports_per_day": 20})
    base = gw.url + "account/"
    owner = signed_in_session(base, "owner@example.com")
    device = Client(tmp_path / "device")
    for front in ("one", "two"):
        device.add_note(front)
    for name, data in MEDIA.items():
        device.add_media(name, data)
    device.login("owner@example.com", PORTAL_PASSWORD, gw.url)
    assert device.sync() == Required.FULL_UPLOAD
    store = LocalStore(tmp_path / "backups")
    snapshot = take(gw.config, store).name
    in_snapshot = device.note_fronts()
    device.add_note("three, after the snapshot")
    assert sync_pushes(device)
    now = device.note_fronts()
    assert now != in_snapshot
    scratch = gw.config.data_dir / "export-scratch"
    exports = 0

    def refused_everywhere(why: str) -> None:
        """The portal's and the command's export, while something else holds the account."""
        nonlocal exports
        answer = owner.post(base + "export", data=export_form(owner, base), timeout=60)
        assert BUSY in answer.text, why
        assert "octet-stream" not in answer.headers.get("Content-Type", "")
        done = cli_export(gw, "owner", tmp_path / f"{exports}.colpkg")
        exports += 1
        assert done.returncode == 3, (why, done.stderr)
        assert done.stderr.count("\n") == 1 and "holds it now; try again" in done.stderr, why
        assert not (tmp_path / f"{exports - 1}.colpkg").exists()
        assert not scratch.exists() or not any(scratch.iterdir())

    def exported() -> set[str]:
        nonlocal exports
        target = tmp_path / f"{exports}.colpkg"
        exports += 1
        done = cli_export(gw, "owner", target)
        assert done.returncode == 0, done.stderr
        fronts, media = imported(target, tmp_path / f"import-{exports}")
        assert media == MEDIA
        return fronts

    # 1. A backup holds the account (its copy under way, as take() holds it).
    held = quiesce.hold(gw.config.collections_dir, "owner", 5)
    assert isinstance(held, quiesce.Held), held
    with held:
        refused_everywhere("a backup holds it")
        answer = sync_meta(gw.url, device.auth.hkey)  # a device meanwhile: told to retry
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert exported() == now

    # 2. A restore of the account, held in the middle of its swap.
    paused = Paused(swap.swap_all)
    monkeypatch.setattr(swap, "swap_all", paused)
    restoring, result = in_thread(restore, gw.config, store, snapshot, ["owner"])
    assert paused.entered.wait(60), result
    refused_everywhere("a restore holds it")
    answer = sync_meta(gw.url, device.auth.hkey)
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    paused.go()
    restoring.join(60)
    assert result == [["owner"]]
    assert exported() == in_snapshot  # the restored collection, whole
    # The device is still signed in: it is asked which copy wins, keeps the restored one.
    out = device.col.sync_collection(device.auth, sync_media=False)
    assert out.required == Required.FULL_SYNC
    device.full_sync(upload=False)
    assert device.note_fronts() == in_snapshot

    # 3. An export holds the account (its copy under way) when a restore wants it: the restore
    # is refused at once and changes nothing; the export's package is whole.
    monkeypatch.setattr(swap, "swap_all", paused.function)
    copying = Paused(job.copy_files)
    monkeypatch.setattr(job, "copy_files", copying)  # the portal's export runs in this process
    form = export_form(owner, base)
    exporting, answered = in_thread(owner.post, base + "export", data=form, timeout=120)
    assert copying.entered.wait(60), answered
    before = folder_state(gw, "owner")
    with pytest.raises(BackupError, match="holds it now; try again shortly; nothing was restored"):
        restore(gw.config, store, snapshot, ["owner"], wait=1)
    assert folder_state(gw, "owner") == before
    assert not (gw.config.collections_dir / "owner" / ".gateway-restore-new").exists()
    copying.go()
    exporting.join(120)
    (answer,) = answered
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/octet-stream"
    package = tmp_path / "during-restore.colpkg"
    package.write_bytes(answer.content)
    assert imported(package, tmp_path / "import-during-restore") == (in_snapshot, MEDIA)
    assert restore(gw.config, store, snapshot, ["owner"]) == ["owner"]  # once the export is done

    # 4. A restore killed half-way through its swap (the new collection in place, the media
    # still set aside): neither an export nor a backup copies that torn set of files.
    folder = gw.config.collections_dir / "owner"
    held = quiesce.hold(gw.config.collections_dir, "owner", 5)
    assert isinstance(held, quiesce.Held), held
    with held:
        present = [n for n in swap.NAMES if (folder / n).exists()]
        (folder / RESTORING).write_text(json.dumps(present))
        (folder / swap.OLD).mkdir()
        for name in present:
            (folder / name).rename(folder / swap.OLD / name)
        staged = store.root / "snapshots" / snapshot / "accounts" / "owner" / "collection.anki2"
        shutil.copyfile(staged, folder / "collection.anki2")  # killed here
    target = tmp_path / "torn.colpkg"
    done = cli_export(gw, "owner", target)
    assert done.returncode == 3 and "a restore of it was cut off" in done.stderr, done.stderr
    assert not target.exists()
    taken = take(gw.config, store, wait=1)
    assert "a restore of it was cut off" in taken.missed["owner"]
    assert (
        "owner" not in json.loads(store.read(f"snapshots/{taken.name}/manifest.json"))["accounts"]
    )
    answer = sync_meta(gw.url, device.auth.hkey)  # the device: try again later, no logout
    assert answer.status_code == 503
    # The next restore puts the account back first, then restores it.
    assert restore(gw.config, store, snapshot, ["owner"]) == ["owner"]
    assert exported() == in_snapshot
    device.close()
