"""Copying a SQLite registry into a DynamoDB table (`python -m gateway accounts copy-registry`).

Every account (all its fields), its name claim, every retired name and every issued key digest
(with its generation and its account's name) is written to the table with a conditional write
that never replaces an item (`DynamoRegistry.copy_*`, the one place that knows the item layout).
An item already in the table is left as it is: "present" when it says what the SQLite registry
says, a **conflict** otherwise (a name held by another `sub`, an account whose fields differ).
So a second run copies only what was added meanwhile, and changes nothing when nothing was.

Compared fields: everything but `last_seen` and `checked_at`, which move with every sync and
re-check on whichever registry the gateway runs on (the table's are kept).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.registry.base import Account, Contents

if TYPE_CHECKING:
    from gateway.registry.dynamo import DynamoRegistry

COPIED, PRESENT, CONFLICT = "copied", "present", "conflict"
#: Fields that change with use, not by a decision: never a conflict.
_MOVING = frozenset({"last_seen", "checked_at"})


def differences(table: Account, source: Account) -> list[str]:
    """The names of the fields (other than `last_seen`, `checked_at`) in which the account in
    the table differs from the source's; [] for the same account."""
    return [
        f.name
        for f in dataclasses.fields(Account)
        if f.name not in _MOVING and getattr(table, f.name) != getattr(source, f.name)
    ]


def after_failed_write(outcome: tuple[str, str]) -> tuple[str, str]:
    """The outcome of a conditional write that failed, from a comparison made after it: still
    nothing in the way means another writer changed the items meanwhile (a conflict)."""
    if outcome[0] == COPIED:
        return CONFLICT, "changed in the table while copying; run it again"
    return outcome


@dataclass
class Report:
    """Counts per kind of item ("accounts", "retired names", "keys") and outcome, and one line
    per conflict naming the account (never a key digest)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def add(self, kind: str, outcome: str, account: str, reason: str = "") -> None:
        per_kind = self.counts.setdefault(kind, {COPIED: 0, PRESENT: 0, CONFLICT: 0})
        per_kind[outcome] += 1
        if outcome == CONFLICT:
            self.conflicts.append(f"{account}: {kind[:-1]} not copied: {reason}")

    def summary(self, *, dry_run: bool) -> str:
        verb = "to copy" if dry_run else COPIED
        return "; ".join(
            f"{kind}: {n[COPIED]} {verb}, {n[PRESENT]} already there, {n[CONFLICT]} in conflict"
            for kind, n in self.counts.items()
        )


async def copy_registry(
    contents: Contents, table: DynamoRegistry, *, dry_run: bool = False
) -> Report:
    """Copy `contents` (`SqliteRegistry.contents()`) into `table`; with `dry_run`, only read
    the table and report what a copy would do. Raises `RegistryUnavailable` when DynamoDB
    cannot answer (what was written stays written: run it again)."""
    report = Report()
    for kind in ("accounts", "retired names", "keys"):
        report.counts[kind] = {COPIED: 0, PRESENT: 0, CONFLICT: 0}
    #: sub → name of the accounts the table has (or, dry run, would have) as here.
    names: dict[str, str] = {}
    for account in contents.accounts:
        outcome, reason = await table.copy_account(account, dry_run=dry_run)
        report.add("accounts", outcome, account.name, reason)
        if outcome != CONFLICT:
            names[account.sub] = account.name
    for retired in contents.retired:
        outcome, reason = await table.copy_retired_name(retired, dry_run=dry_run)
        report.add("retired names", outcome, retired.name, reason)
    for key in contents.keys:
        name = names.get(key.sub)
        if name is None:  # its account is gone, or in conflict (reported): copied once
            continue  # that is resolved, by a later run
        outcome, reason = await table.copy_host_key(key, name, dry_run=dry_run)
        report.add("keys", outcome, name, reason)
    return report
