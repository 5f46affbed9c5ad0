"""`python -m gateway backup ...` and `python -m gateway restore ...`: their arguments, the
calls into gateway/backup/, and the exit codes (gateway/backup/__init__.py has the contract).

    backup --to DIR|s3://bucket/prefix [--keep N] [--include-secret] [--wait SECONDS]
    backup --list --to DEST
    backup verify DEST[/snapshots/NAME]
    restore --from DIR|s3://bucket/prefix [--snapshot NAME] [--account NAME ...]
            [--exclude NAME ...] [--wait S]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from gateway import logs
from gateway.config import Config


def add_backup_arguments(
    parser: argparse.ArgumentParser, common: list[argparse.ArgumentParser]
) -> None:
    """`backup`'s flags and its `verify` subcommand; `common`: options `verify` takes too."""
    # Not required= here: `backup verify DEST` has no --to (checked in `backup()`).
    parser.add_argument("--to", help="a folder, or s3://bucket/prefix")
    parser.add_argument("--keep", type=int, help="keep only the newest N snapshots")
    parser.add_argument(
        "--include-secret",
        action="store_true",
        help="also copy gateway.secret (only to a destination holding a SECRETS-OK marker)",
    )
    parser.add_argument("--list", action="store_true", help="list the snapshots there")
    _wait(parser, "backup")
    checking = parser.add_subparsers(dest="backup_action")
    verifying = checking.add_parser("verify", parents=common)
    verifying.add_argument(
        "snapshot",
        help="DEST/snapshots/NAME (DEST a folder or s3://bucket/prefix), or DEST: its newest",
    )
    parser.set_defaults(run=backup, usage_error=parser.error)


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True)
    parser.add_argument("--snapshot", help="its name (default: the newest)")
    parser.add_argument("--account", action="append", help="only this account (repeatable)")
    parser.add_argument(
        "--exclude", action="append", default=[], help="not this account (repeatable)"
    )
    _wait(parser, "restore")
    parser.set_defaults(run=restore)


def _wait(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help=f"seconds an account's syncs under way may delay its {command} before they are cut"
        " (default 60)",
    )


def backup(args: argparse.Namespace, config: Config) -> int:
    if args.backup_action == "verify":
        return verify(args.snapshot, config)
    if args.to is None:
        args.usage_error("the following arguments are required: --to")
    from gateway.backup.retention import snapshots
    from gateway.backup.snapshot import BackupError, take
    from gateway.backup.store import open_store

    try:
        if args.wait < 0:
            raise BackupError("--wait must be 0 or more seconds")
        store = open_store(args.to)
        if args.list:
            for name in snapshots(store):
                print(name)
            return 0
        taken = take(
            config, store, include_secret=args.include_secret, keep=args.keep, wait=args.wait
        )
        print(f"snapshot {taken.name} in {store.url}")
        for account, why in sorted(taken.missed.items()):
            print(f"anki-cognito-gateway backup: NOT backed up: {account}: {why}", file=sys.stderr)
        for snapshot, why in sorted(taken.untrusted.items()):
            print(
                # Names come from the store's listing: escaped, as log lines are.
                f"anki-cognito-gateway backup: --keep left snapshot {logs.escape(snapshot)}"
                f" alone and deleted no media: {logs.escape(why)}",
                file=sys.stderr,
            )
        if taken.missed or taken.untrusted:
            return 1
    except BackupError as exc:
        print(f"anki-cognito-gateway backup: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _unusable("backup", args.to, exc)
    return 0


def restore(args: argparse.Namespace, config: Config) -> int:
    from gateway.backup.restore import restore as restore_accounts
    from gateway.backup.snapshot import BackupError
    from gateway.backup.store import open_store

    try:
        if args.wait < 0:
            raise BackupError("--wait must be 0 or more seconds")
        store = open_store(args.source)
        done = restore_accounts(
            config, store, args.snapshot, args.account, exclude=tuple(args.exclude), wait=args.wait
        )
        print(f"restored {len(done)} account(s): {', '.join(done)}")
    except BackupError as exc:
        print(f"anki-cognito-gateway restore: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        return _unusable("restore", args.source, exc)
    return 0


def _unusable(command: str, where: str, exc: OSError) -> int:
    """The destination (most often: nothing mounted at /backups in a container, whose root only
    root may write) or a full disk: one line saying what to do; exit 1."""
    verb = "write" if command == "backup" else "read"
    print(
        f"anki-cognito-gateway {command}: cannot {verb}"
        f" {where}: {exc.strerror or exc} ({exc.filename or where}); it must be a folder this"
        f" user (uid {os.getuid()}; the image runs as uid 10001) can"
        f" {verb}, e.g. a volume mounted there",
        file=sys.stderr,
    )
    return 1


def verify(snapshot: str, config: Config) -> int:
    from gateway.backup.retention import snapshots
    from gateway.backup.snapshot import BackupError, manifest_key
    from gateway.backup.store import open_store
    from gateway.backup.verify import verify

    dest, _, name = snapshot.rstrip("/").rpartition("/snapshots/")
    if not dest:
        dest, name = snapshot, ""
    try:
        key = manifest_key(config)
        store = open_store(dest)
        available = snapshots(store)
        name = name or (available[-1] if available else "")
        if name not in available:
            raise BackupError(f"no complete snapshot {name!r} in {store.url}")
    except (BackupError, ValueError, OSError) as exc:
        print(f"anki-cognito-gateway backup verify: {exc}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-verify-") as scratch:
            problems = verify(store, name, key, Path(scratch))
    except BackupError as exc:
        print(f"anki-cognito-gateway backup verify: {exc}", file=sys.stderr)
        return 1
    for account, problem in problems.items():
        print(f"anki-cognito-gateway backup verify: {name}: {account}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"snapshot {name} in {store.url} verified")
    return 0
