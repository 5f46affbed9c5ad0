"""Retention: which accounts have been unused long enough to be removed. Pure.

    last_seen(account) -> float                 Unix seconds
    inactive(accounts, days, now) -> list[Account]   oldest first

"Seen" is the latest of: the account's creation, its last sync (`Account.last_seen`, written at
most every registry.SEEN_EVERY seconds while a device syncs, and at every Anki login), and the
last time Cognito vouched for its owner (`Account.checked_at`: an Anki login, a portal sign-in,
and the background re-check of the owner that only runs when a device uses its key). An account
seen within `days` days is never listed, whatever its status; `days` must be at least 1.

The command that acts on the list is retention/prune.py (`accounts prune`).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.registry import Account

DAY = 86_400.0


def last_seen(account: Account) -> float:
    return max(account.created_at, account.last_seen, account.checked_at)


def inactive(accounts: Iterable[Account], days: int, now: float) -> list[Account]:
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = now - days * DAY
    return sorted((a for a in accounts if last_seen(a) < cutoff), key=last_seen)
