"""Removing a deleted account's folder once no sync server runs in it, in any gateway process.

    await erase_folder(collections_dir, account, wait) -> None | str    (str: why it was left)
    await erase_served(pool, collections_dir, account) -> None | str
        the same from a serving gateway process: its own sync server for the account stopped
        at once first (the account's keys are refused already), the others within ERASE_WAIT

The three paths that remove a deleted account's folder all come here: `accounts prune`
(retention/prune.py, erase_folder), the portal's "delete my account" (portal/account.py) and the
owner node's side of a cluster erase (cluster/erase.py handle_erase, given erase_served by
app.py: the cluster package sits below this one), both erase_served.

Why the handshake (quiesce.py) and not just a stop and `rmtree`: with several gateway processes
(`server.processes`) the account's sync server may belong to another process, which a stop in
this one never reaches; and one may be starting for a request admitted just before the
deletion, which re-creates the folder it starts in. So the account is held the way a backup
holds it: its want posted (every process stops the account's server once it is idle, or after
`wait` seconds), then its worker lock taken, under which no server can start; the folder's
contents go while the lock is held, the folder (with the lock files) after.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from gateway.backup import quiesce
from gateway.workers.lock import LOCK_NAME
from gateway.workers.pool import WorkerPool

#: Seconds a deleted account's sync server (another gateway process's) may go on serving a
#: request in flight before it is stopped anyway (its keys are refused already), while the
#: folder waits to be removed.
ERASE_WAIT = 10.0


async def erase_folder(collections_dir: Path, account: str, wait: float) -> str | None:
    """Remove `account`'s folder (module doc). None when it is gone, or was never there; else
    why it stays (another backup, restore, export or prune holds it; its sync server did not
    stop within `wait` + quiesce.STOP_MARGIN seconds). Blocks the loop for nothing: the
    handshake's polls and the removal run in threads."""
    folder = collections_dir / account
    if not folder.is_dir():
        return None  # never synced here
    held = await asyncio.to_thread(quiesce.hold, collections_dir, account, wait)
    if isinstance(held, str):
        return held
    with held:
        await asyncio.to_thread(_remove_contents, held.folder)
    await asyncio.to_thread(shutil.rmtree, folder, True)
    return None


async def erase_served(
    pool: WorkerPool, collections_dir: Path, account: str, wait: float = ERASE_WAIT
) -> str | None:
    """`erase_folder` from a serving gateway process (module doc): `pool`'s own sync server for
    `account` stopped at once, then the handshake for every other process's."""
    await pool.stop(account)
    return await erase_folder(collections_dir, account, wait)


def _remove_contents(folder: Path) -> None:
    """Everything but the lock files the handshake still holds (removed with the folder after)."""
    for entry in folder.iterdir():
        if entry.name in (quiesce.BACKUP_LOCK, LOCK_NAME):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
