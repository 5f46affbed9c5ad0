"""`python -m gateway accounts ...`: look at and switch off local accounts from a shell.

    accounts list                 every account: name, status, Cognito username, email, last
                                  sync, collection size, media files and their size, its limits
                                  (collection / media / media file) and what it is over
    accounts quota NAME [--collection-upload-megs N] [--collection-megs N] [--media-megs N]
                        [--media-file-megs N]
                                  the account's own storage limits in MB (0: unlimited,
                                  "default": back to the configured one); without options,
                                  shows its limits and usage
    accounts disable NAME         the account's keys get 403 at once; logins are refused
    accounts enable NAME          undoes `disable` (and a suspension after a Cognito re-check)
    accounts move NAME --to NODE  several nodes with their own disks (gateway/cluster/move.py):
                                  copy the account's folder to NODE under its lock, check it,
                                  make NODE its owner; devices keep their keys
    accounts sign-out NAME        "log out everywhere": every device's key gets 403 at its next
                                  request; the next login gets a new key (the account's key
                                  generation moves on; other accounts are untouched); its
                                  account-portal sessions end too
    accounts create-table         create the DynamoDB table `registry.table` (registry.backend
                                  dynamodb) with its indexes; nothing if it exists
    accounts copy-registry [--from FILE] [--dry-run]
                                  copy the SQLite registry (default <data>/registry.sqlite3)
                                  into the DynamoDB table registry.* names (registry.backend
                                  dynamodb): accounts, names, retired names, key digests; never
                                  replaces an item in the table; exit 4 when some conflict
    accounts export NAME --to FILE
                                  the account's collection and media as an Anki collection
                                  package (.colpkg, gateway/export/), made consistently while
                                  devices sync (the backup's handshake); FILE must not exist
    accounts prune --inactive-days N [--delete] [--wait SECONDS]
                                  accounts not seen for N days (gateway/retention/): listed
                                  (a dry run, the default), or with --delete removed as the
                                  portal's "delete my account" does; exit 3 when some are left
    accounts import DIR [--dry-run]
                                  take over the earlier server's collections/ folders
                                  (gateway/importer/); --dry-run prints the plan only

Exit status: 0 done, 1 no such account (or nothing to export), 2 wrong usage, 3 the registry
cannot answer now (one line on stderr, as in the gateway's log: DynamoDB's call and error
code; for export: the account is busy or the export failed), 4 copy-registry left items in
conflict (one line each, naming the account).

Works on the registry directly (the SQLite file, WAL; or the DynamoDB table), so it also works
while the gateway runs: a running gateway sees the change on the account's next request (with
DynamoDB, within `registry.cache_seconds`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

from gateway.config import Config
from gateway.ops.usage import Usage, human_bytes, usage
from gateway.quota import usage as quota_usage
from gateway.quota.guard import override_of
from gateway.quota.limits import quota_limits
from gateway.quota.usage import limit_text
from gateway.registry import (
    ACTIVE,
    DISABLED,
    REGISTRY_FILE,
    Account,
    Registry,
    RegistryUnavailable,
    SqliteRegistry,
    open_registry,
)
from gateway.registry.base import QUOTA_FIELDS


def main(argv: list[str], config: Config) -> int:
    if argv[:1] == ["import"]:
        from gateway.importer import main as import_main

        return import_main(argv[1:], config)
    parser = argparse.ArgumentParser(prog="python -m gateway accounts")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    sub.add_parser("create-table")
    for action in ("disable", "enable", "sign-out"):
        sub.add_parser(action).add_argument("name")
    copying = sub.add_parser("copy-registry")
    copying.add_argument("--from", dest="source", type=Path, metavar="FILE")
    copying.add_argument("--dry-run", action="store_true")
    exporting = sub.add_parser("export")
    exporting.add_argument("name")
    exporting.add_argument("--to", required=True, type=Path, metavar="FILE", dest="target")
    pruning = sub.add_parser("prune")
    pruning.add_argument("--inactive-days", type=int, required=True, metavar="N")
    pruning.add_argument("--delete", action="store_true", help="default: a dry run")
    pruning.add_argument("--wait", type=float, default=60.0, metavar="SECONDS")
    quota = sub.add_parser("quota")
    quota.add_argument("name")
    for name in QUOTA_FIELDS:
        flag = "--" + name.removeprefix("quota_").replace("_", "-")
        quota.add_argument(flag, dest=name, type=_megs, metavar="MB|default", default=_UNSET)
    moving = sub.add_parser("move")
    moving.add_argument("name")
    moving.add_argument("--to", required=True, metavar="NODE")
    args = parser.parse_args(argv)
    if args.action == "prune" and args.inactive_days < 1:
        parser.error("--inactive-days: at least 1")
    if args.action == "create-table":
        return _create_table(config)
    try:
        if args.action == "copy-registry":
            return asyncio.run(_copy_registry(config, args.source, dry_run=args.dry_run))
        return asyncio.run(_run(args, config))
    except RegistryUnavailable as exc:  # the detail names the call and AWS's error code
        print(exc, file=sys.stderr)
        return 3


_UNSET = object()


def _megs(text: str) -> int | None:
    """An override in MB from the command line: a whole number >= 0, or "default" (None)."""
    if text == "default":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number of MB, or default") from None
    if value < 0:
        raise argparse.ArgumentTypeError("0 (unlimited) or more")
    return value


def _limits_line(config: Config, account: Account, used: Usage) -> tuple[str, str]:
    """(the account's limits, what it is over) for `list` and `quota`."""
    limits = quota_limits(config.quota).with_override(override_of(account))
    text = " / ".join(limit_text(x) for x in (limits.collection, limits.media, limits.media_file))
    over = quota_usage.over(used, limits)
    return text, ", ".join(over) or "-"


def _create_table(config: Config) -> int:
    if config.registry.backend != "dynamodb":
        print("registry.backend is sqlite: there is no table to create")
        return 2
    from gateway.registry.dynamo import create_table, make_client

    create_table(make_client(config), config.registry.table)
    print(f"DynamoDB table {config.registry.table} ready")
    return 0


async def _copy_registry(config: Config, source: Path | None, *, dry_run: bool) -> int:
    from gateway.registry.dynamo import DynamoRegistry
    from gateway.registry.transfer import copy_registry

    if config.registry.backend != "dynamodb":
        print(
            "copy-registry: the table to copy into is the configured one: set registry.backend "
            "dynamodb (GATEWAY_REGISTRY_BACKEND=dynamodb) and registry.table"
        )
        return 2
    source = source or config.data_dir / REGISTRY_FILE
    if not source.is_file():
        print(f"copy-registry: no SQLite registry at {source}")
        return 2
    sqlite = SqliteRegistry(source, config.collections_dir)
    table = DynamoRegistry.from_config(config)
    try:
        report = await copy_registry(await sqlite.contents(), table, dry_run=dry_run)
    finally:
        await table.close()
        await sqlite.close()
    for line in report.conflicts:
        print(line)
    print(("dry run: " if dry_run else "") + report.summary(dry_run=dry_run))
    return 4 if report.conflicts else 0


async def _run(args: argparse.Namespace, config: Config) -> int:
    registry = open_registry(config)
    try:
        if args.action == "list":
            print(
                "name\tstatus\tusername\temail\tlast sync\tcollection\tmedia files\tmedia"
                "\tlimits (collection / media / media file)\tover"
            )
            for a in await registry.all():
                seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.last_seen))
                used = usage(registry.folder(a))
                limits, over = _limits_line(config, a, used)
                print(
                    f"{a.name}\t{a.status}\t{a.cognito_username}\t{a.email or '-'}\t{seen}"
                    f"\t{human_bytes(used.collection_bytes)}\t{used.media_files}"
                    f"\t{human_bytes(used.media_bytes)}\t{limits}\t{over}"
                )
            return 0
        if args.action == "prune":
            from gateway.retention.prune import prune

            return await prune(
                config, registry, args.inactive_days, delete=args.delete, wait=args.wait
            )
        account = await registry.get_by_name(args.name)
        if account is None:
            print(f"no account named {args.name!r}")
            return 1
        if args.action == "move":
            return await _move(config, account.sub, account.name, args.to)
        if args.action == "export":
            return await asyncio.to_thread(_export, config, account.name, args.target)
        if args.action == "quota":
            return await _quota(args, config, registry, account)
        if args.action == "sign-out":
            generation = await registry.sign_out(account.sub)
            await registry.end_portal_sessions(account.sub)  # as the portal's button does
            print(f"{account.name}: signed out everywhere (key generation {generation})")
            return 0
        await registry.set_status(account.sub, DISABLED if args.action == "disable" else ACTIVE)
        print(f"{account.name}: {args.action}d")
        return 0
    finally:
        await registry.close()


def _export(config: Config, name: str, target: Path) -> int:
    from gateway.export import EXPORT_SCRATCH, ExportError, discard, make

    if target.exists() or target.is_symlink():
        print(f"accounts export: {target} exists; give a new file name", file=sys.stderr)
        return 2
    try:
        package = make(config.collections_dir, name, config.data_dir / EXPORT_SCRATCH)
    except ExportError as exc:
        print(f"{name}: not exported: {exc.detail}", file=sys.stderr)
        return 1 if exc.reason == "nothing" else 3
    try:
        package.chmod(0o600)  # someone's whole collection
        shutil.move(package, target)
    finally:
        discard(package)
    print(f"{name}: exported to {target} ({human_bytes(target.stat().st_size)})")


async def _quota(
    args: argparse.Namespace, config: Config, registry: Registry, account: Account
) -> int:
    changes = {k: getattr(args, k) for k in QUOTA_FIELDS if getattr(args, k) is not _UNSET}
    if changes:
        await registry.set_quota(account.sub, changes)
        account = await registry.get(account.sub) or account
    for name in QUOTA_FIELDS:
        value = getattr(account, name)
        shown = "default" if value is None else ("unlimited" if value == 0 else f"{value} MB")
        print(f"{name.removeprefix('quota_').removesuffix('_megs')}: {shown}")
    used = usage(registry.folder(account))
    limits, over = _limits_line(config, account, used)
    print(
        f"{account.name}: collection {human_bytes(used.collection_bytes)}, media "
        f"{used.media_files} files {human_bytes(used.media_bytes)}; limits {limits}; over: {over}"
    )
    return 0


async def _move(config: Config, sub: str, name: str, to: str) -> int:
    from gateway.cluster.move import MoveFailed, request_move

    if not config.cluster.enabled:
        print("accounts move: only with several nodes (cluster.node_id is not set)")
        return 2
    try:
        result = await request_move(config, sub, name, to)
    except MoveFailed as exc:
        print(f"{name}: not moved: {exc}")
        return 1
    print(
        f"{name}: moved to {to} ({result['files']} files checked; old copy kept as "
        f"{result['kept']} on the old node)"
    )
    return 0
