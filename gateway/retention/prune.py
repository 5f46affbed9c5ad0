"""`python -m gateway accounts prune --inactive-days N [--delete]`: remove unused accounts.

Off unless an operator runs it (from cron or a timer, say). Without `--delete` it is a dry run:
it lists the accounts not seen for N days (retention/unused.py says what "seen" means) and
changes nothing. With `--delete` each listed account is first claimed in the registry with one
conditional write (`Registry.claim_for_deletion`: status -> "deleting" only if it is still
unseen for N days now: a SQLite UPDATE ... WHERE, a DynamoDB ConditionExpression); an account
seen meanwhile (a login during the run) fails the claim and is skipped. A login's own "seen"
write (`Registry.touch`) is conditional on the account not being "deleting", so of a login and the
claim exactly one wins: the login (the account stays) or the claim (the login, and every login
until the deletion is done, gets 503 with Retry-After, never 403, and the account is removed
whole; the next login after it makes a fresh account, if the Cognito user was kept). A claimed
account's keys wait too (`AccountBeingDeleted`, 503). The claimed account is then deleted
through the same path as the portal's "delete my account" (gateway/deletion.py, the Cognito
user treated as `portal.delete_cognito_user` says). Its sync server is stopped through the
backup's handshake (quiesce.py: any gateway process stops it once it is idle, or after `--wait`
seconds) and the folder removed under the account's worker lock. A login half-way meanwhile
leaves nothing behind (auth/login.py re-reads the row after making the folder: 503, its empty
folder removed). When Cognito cannot be told, the claim is released (the status it had) and the
account counted as failed.

A run killed after a claim leaves the account "deleting" (its owner gets 503): the next
`--delete` run finishes those first, whatever their last sight (the decision was made, and no
login has used the account since); a dry run lists them. Run the command on a schedule.

Printed (one line per account, then a summary) and counted: the run's counts go to
`<data>/prune-state.json`, which the running gateway's /metrics reads at each scrape
(`gateway_prune_last_run_timestamp_seconds`, `gateway_prune_last_run_accounts{outcome}`:
deleted, would_delete, skipped, failed), as it does for the backup's state.
Exit status: 0 done (also when nothing was listed), 3 some accounts were not deleted (Cognito or
the folder could not be dealt with now: run it again).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gateway.backup.erase import erase_folder
from gateway.config import Config
from gateway.deletion import Steps, delete_account
from gateway.registry import DELETING, Account, Registry
from gateway.retention.unused import DAY, inactive, last_seen

STATE_FILE = "prune-state.json"


async def prune(
    config: Config, registry: Registry, days: int, *, delete: bool, wait: float = 60.0
) -> int:
    accounts = await registry.all()
    # Claims an interrupted run left (it was killed after claiming): finished first.
    left = [a for a in accounts if a.status == DELETING]
    listed = left + [a for a in inactive(accounts, days, time.time()) if a.status != DELETING]
    if not delete:
        for account in listed:
            print(f"would delete\t{account.name}\tlast seen {_when(last_seen(account))}")
        _record(config.data_dir, {"would_delete": len(listed)})
        print(f"dry run: {len(listed)} account(s) not seen for {days} days; --delete removes them")
        return 0
    steps = Steps(registry, _remover(config), lambda gone: _erase(config, gone, wait))
    deleted = failed = skipped = 0
    for account in listed:
        claimed = account if account.status == DELETING else await _claim(registry, account, days)
        if claimed is None:
            skipped += 1
            print(f"skipped\t{account.name}\tseen meanwhile (or gone)")
            continue
        if await delete_account(claimed, steps):
            deleted += 1
            print(f"deleted\t{account.name}\tlast seen {_when(last_seen(claimed))}")
        else:
            failed += 1
            if account.status != DELETING:  # released: its owner can log in meanwhile
                await registry.set_status(account.sub, account.status, only_from=DELETING)
            print(f"not deleted\t{account.name}\tCognito could not be told; try again")
    _record(config.data_dir, {"deleted": deleted, "skipped": skipped, "failed": failed})
    print(f"{deleted} account(s) deleted, {failed} not, of {len(listed)} not seen for {days} days")
    return 3 if failed else 0


async def _claim(registry: Registry, account: Account, days: int) -> Account | None:
    """The account claimed (DELETING) if it is still unseen for `days` days now, else None."""
    return await registry.claim_for_deletion(account.sub, time.time() - days * DAY)


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
    left = await erase_folder(config.collections_dir, account.name, wait)
    if left is not None:
        print(f"note\t{account.name}\tfolder left ({left}); remove {folder} later", file=sys.stderr)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))
