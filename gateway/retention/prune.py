"""`python -m gateway accounts prune --inactive-days N [--delete]`: remove unused accounts.

Off unless an operator runs it (from cron or a timer, say). Without `--delete` it is a dry run:
it lists the accounts not seen for N days (retention/unused.py says what "seen" means) and
changes nothing. With `--delete` each listed account is deleted through the same path as the
portal's "delete my account" (gateway/deletion.py, the Cognito user treated as
`portal.delete_cognito_user` says), after reading it again from the registry just before: an
account seen meanwhile (a login during the run) is skipped. Its sync server is stopped through
the backup's handshake (quiesce.py: any gateway process stops it once it is idle, or after
`--wait` seconds) and the folder removed under the account's worker lock. A login half-way
meanwhile leaves nothing behind (auth/login.py re-reads the row after making the folder: 503,
its empty folder removed). Not atomic: a login whose registry write lands between the last
read and the Cognito call (milliseconds) is still removed with its account.

Printed (one line per account, then a summary) and counted: the run's counts go to
`<data>/prune-state.json`, which the running gateway's /metrics reads at each scrape
(`gateway_prune_last_run_timestamp_seconds`, `gateway_prune_last_run_accounts{outcome}`:
deleted, would_delete, skipped, failed), as it does for the backup's state.
Exit status: 0 done (also when nothing was listed), 3 some accounts were not deleted (Cognito or
the folder could not be dealt with now: run it again).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

from gateway.backup import quiesce
from gateway.config import Config
from gateway.deletion import Steps, delete_account
from gateway.registry import Account, Registry
from gateway.retention.unused import inactive, last_seen
from gateway.workers.lock import LOCK_NAME

STATE_FILE = "prune-state.json"


async def prune(
    config: Config, registry: Registry, days: int, *, delete: bool, wait: float = 60.0
) -> int:
    now = time.time()
    listed = inactive(await registry.all(), days, now)
    if not delete:
        for account in listed:
            print(f"would delete\t{account.name}\tlast seen {_when(last_seen(account))}")
        _record(config.data_dir, {"would_delete": len(listed)})
        print(f"dry run: {len(listed)} account(s) not seen for {days} days; --delete removes them")
        return 0
    steps = Steps(registry, _remover(config), lambda gone: _erase(config, gone, wait))
    deleted = failed = skipped = 0
    for account in listed:
        fresh = await registry.get(account.sub)
        if fresh is None or inactive([fresh], days, time.time()) == []:
            skipped += 1
            print(f"skipped\t{account.name}\tseen meanwhile (or gone)")
            continue
        if await delete_account(fresh, steps):
            deleted += 1
            print(f"deleted\t{account.name}\tlast seen {_when(last_seen(fresh))}")
        else:
            failed += 1
            print(f"not deleted\t{account.name}\tCognito could not be told; try again")
    _record(config.data_dir, {"deleted": deleted, "skipped": skipped, "failed": failed})
    print(f"{deleted} account(s) deleted, {failed} not, of {len(listed)} not seen for {days} days")
    return 3 if failed else 0


def _record(data_dir: Path, counts: dict[str, int]) -> None:
    target = data_dir / STATE_FILE
    partial = target.with_name(STATE_FILE + ".partial")
    partial.write_text(json.dumps({"finished": time.time(), **counts}))
    partial.replace(target)


def last_run(data_dir: Path) -> dict[str, float] | None:
    """{"finished": unix time, outcome: count, ...} of the last run, or None."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        return {k: float(v) for k, v in state.items() if isinstance(v, (int, float))}
    except (OSError, ValueError, AttributeError):
        return None


def _remover(config: Config):  # noqa: ANN202 - a coroutine function
    action = config.portal.delete_cognito_user

    async def remove(username: str) -> None:
        if action == "keep":
            return
        from gateway.portal.directory import CognitoDirectory

        directory = CognitoDirectory(config.cognito)
        try:
            await directory.remove(username, action)
        finally:
            await directory.close()

    return remove


async def _erase(config: Config, account: Account, wait: float) -> None:
    folder = config.collections_dir / account.name
    if not folder.is_dir():
        return  # never synced here
    held = await asyncio.to_thread(quiesce.hold, config.collections_dir, account.name, wait)
    if isinstance(held, str):
        print(f"note\t{account.name}\tfolder left ({held}); remove {folder} later", file=sys.stderr)
        return
    with held:
        await asyncio.to_thread(_remove_contents, held.folder)
    await asyncio.to_thread(shutil.rmtree, folder, True)


def _remove_contents(folder: Path) -> None:
    """Everything but the lock files the handshake still holds (removed with the folder after)."""
    for entry in folder.iterdir():
        if entry.name in (quiesce.BACKUP_LOCK, LOCK_NAME):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))
