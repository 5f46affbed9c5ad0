"""A deleted account's folder removed while another gateway process runs its sync server
(backup/erase.py), with the real stock server: two pools on one folder stand for two processes."""

from __future__ import annotations

from pathlib import Path

from gateway.backup.erase import erase_folder
from gateway.backup.gate import BackupGate
from tests.conftest import live_worker_pids


async def _running_elsewhere(make_pool, collections_dir: Path):
    """Another process's pool and gate, with alice's sync server running idle in it."""
    other = await make_pool()
    gate = BackupGate(collections_dir, other)
    await gate.start()
    async with other.lease("alice"):
        pass
    assert other.running() == ["alice"] and live_worker_pids(collections_dir)
    return other, gate


async def test_the_folder_goes_once_the_other_processes_sync_server_stopped(
    make_pool, collections_dir
):
    # Before, the portal stopped only its own process's server and removed the folder at once:
    # with `server.processes` above 1 the account's server could be the other process's, still
    # running in the folder removed under it.
    this = await make_pool()
    other, gate = await _running_elsewhere(make_pool, collections_dir)
    try:
        await this.stop("alice")  # reaches nothing: the server is the other process's
        assert live_worker_pids(collections_dir)
        assert await erase_folder(collections_dir, "alice", wait=5) is None
        assert not (collections_dir / "alice").exists()
        assert live_worker_pids(collections_dir) == []
        assert other.running() == []
    finally:
        await gate.close()


async def test_a_folder_held_by_a_backup_is_left_with_the_reason(make_pool, collections_dir):
    from gateway.backup import quiesce

    (collections_dir / "dora").mkdir()
    with quiesce.post(collections_dir / "dora", force_at=float("inf")):
        left = await erase_folder(collections_dir, "dora", wait=1)
    assert left is not None and "backup" in left
    assert (collections_dir / "dora").is_dir()


async def test_no_folder_is_nothing_to_do(collections_dir):
    assert await erase_folder(collections_dir, "carol", wait=1) is None
    assert not (collections_dir / "carol").exists()
