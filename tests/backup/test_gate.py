"""The backup gate on the request path: an account's folder is checked once, not per request."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.backup import gate as gate_mod
from gateway.backup import quiesce
from gateway.backup.gate import BackupGate
from gateway.errors import Unavailable
from gateway.workers.lock import NoAccountFolder


class NoPool:
    def running(self) -> list[str]:
        return []


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each call of the folder check (mkdir and path resolution) the gate makes."""
    made: list[str] = []
    real = gate_mod.account_dir

    def counted(root: Path, account: str) -> Path:
        made.append(account)
        return real(root, account)

    monkeypatch.setattr(gate_mod, "account_dir", counted)
    return made


async def test_a_folder_is_checked_once_for_many_requests(tmp_path: Path, checks: list[str]):
    (tmp_path / "alice").mkdir()  # made by the login (workers/lock.py: make_account_dir)
    gate = BackupGate(tmp_path, NoPool())  # type: ignore[arg-type]
    for _ in range(5):
        async with gate.passage("alice", "sync/meta", "s1") as passage:
            assert quiesce.idle_everywhere(tmp_path / "alice") is False  # the share is held
            passage.status = 200
    assert quiesce.idle_everywhere(tmp_path / "alice") is True
    assert checks == ["alice"]


async def test_a_folder_removed_meanwhile_is_looked_up_again_and_never_made_again(
    tmp_path: Path, checks: list[str]
):
    (tmp_path / "bob").mkdir()
    gate = BackupGate(tmp_path, NoPool())  # type: ignore[arg-type]
    async with gate.passage("bob", "sync/meta", "s1"):
        pass
    shutil.rmtree(tmp_path / "bob")  # moved to another node, say
    with pytest.raises(NoAccountFolder):  # 503 with Retry-After, never a folder made here
        async with gate.passage("bob", "sync/meta", "s1"):
            pass
    assert not (tmp_path / "bob").exists()
    assert checks == ["bob", "bob"]


async def test_a_wanted_account_is_still_held_with_a_remembered_folder(tmp_path: Path):
    (tmp_path / "cid").mkdir()
    gate = BackupGate(tmp_path, NoPool(), hold=0.2)  # type: ignore[arg-type]
    async with gate.passage("cid", "sync/meta", "s1"):
        pass
    with quiesce.post(tmp_path / "cid", force_at=float("inf")):
        with pytest.raises(Unavailable):
            async with gate.passage("cid", "sync/meta", "s2"):
                pass


class Running:
    def __init__(self, accounts: list[str]) -> None:
        self.accounts = accounts
        self.retired: list[str] = []

    def running(self) -> list[str]:
        return self.accounts

    def retire(self, account: str, why: str) -> None:
        self.retired.append(account)


async def test_the_watchers_rounds_resolve_no_path_for_remembered_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every round looks at each running worker's account (and open sync): with the folders
    remembered from their requests, a round costs no path resolution (issue 18: two per account
    and round were 9 % of the gateway's busy time)."""
    names = [f"u{i}" for i in range(5)]
    for name in names:
        (tmp_path / name).mkdir()
    pool = Running(names)
    gate = BackupGate(tmp_path, pool)  # type: ignore[arg-type]
    for name in names:
        async with gate.passage(name, "sync/start", "s1") as passage:
            passage.status = 200  # an open sync: the watcher looks at it too
    resolved: list[str] = []
    real = gate_mod.account_path

    def counted(root: Path, account: str) -> Path:
        resolved.append(account)
        return real(root, account)

    monkeypatch.setattr(gate_mod, "account_path", counted)
    for _ in range(3):
        gate.watch()
    assert resolved == []
    # The remembered folders still see a backup's want: its open sync is cut and its worker
    # stopped once the want is forced.
    with quiesce.post(tmp_path / "u3", force_at=0.0):
        gate.watch()
    assert pool.retired == ["u3"]
    with pytest.raises(Unavailable):  # the cut sync's next request
        async with gate.passage("u3", "sync/applyChanges", "s1"):
            pass
    # An account never seen by a request (a worker started by a login) is still looked at, by
    # its path, and never made.
    pool.accounts.append("newcomer")
    gate.watch()
    assert resolved == ["newcomer"]
    assert not (tmp_path / "newcomer").exists()
