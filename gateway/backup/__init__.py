"""Backups: `python -m gateway backup` and `python -m gateway restore`.

    backup --to DIR|s3://bucket/prefix [--keep N] [--include-secret] [--wait SECONDS]
    backup --list --to DEST
    backup verify DEST[/snapshots/NAME]
    restore --from DIR|s3://bucket/prefix [--snapshot NAME] [--account NAME ...]
            [--exclude NAME ...] [--wait S]

snapshot.py takes consistent snapshots while people sync, asking the gateways through
quiesce.py (the running gateways' side is gate.py, with sessions.py), and signs their manifest
(manifest.py); retention.py lists and prunes them; verify.py checks one; restore.py puts
accounts back under their locks, all or none (swap.py); store.py is the folder or S3 behind
all. Exit status: 0; 1 with one line saying what to do (BackupError, or an OSError of the
destination: missing and not creatable, not writable, full), or when an account was not backed
up (the snapshot of the others is kept; each missed account is named on stderr with the
reason). `backup verify`: 0 the snapshot is sound (a restore would take it); 1 it is not
(each problem on stderr: a restore refuses it); 2 it could not be checked (no
backup.manifest_key, no such store or snapshot).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.config import Config


def main(command: str, argv: list[str], config: Config) -> int:
    if command == "backup" and argv[:1] == ["verify"]:
        return _verify(argv[1:], config)
    from gateway.backup.restore import restore
    from gateway.backup.retention import snapshots
    from gateway.backup.snapshot import BackupError, take
    from gateway.backup.store import open_store

    parser = argparse.ArgumentParser(prog=f"python -m gateway {command}")
    if command == "backup":
        parser.add_argument("--to", required=True, help="a folder, or s3://bucket/prefix")
        parser.add_argument("--keep", type=int, help="keep only the newest N snapshots")
        parser.add_argument(
            "--include-secret",
            action="store_true",
            help="also copy gateway.secret (only to a destination holding a SECRETS-OK marker)",
        )
        parser.add_argument("--list", action="store_true", help="list the snapshots there")
    else:
        parser.add_argument("--from", dest="source", required=True)
        parser.add_argument("--snapshot", help="its name (default: the newest)")
        parser.add_argument("--account", action="append", help="only this account (repeatable)")
        parser.add_argument(
            "--exclude", action="append", default=[], help="not this account (repeatable)"
        )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help=f"seconds an account's syncs under way may delay its {command} before they are cut"
        " (default 60)",
    )
    args = parser.parse_args(argv)
    try:
        if args.wait < 0:
            raise BackupError("--wait must be 0 or more seconds")
        if command == "backup":
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
                print(
                    f"anki-cognito-gateway backup: NOT backed up: {account}: {why}", file=sys.stderr
                )
            if taken.missed:
                return 1
        else:
            store = open_store(args.source)
            done = restore(
                config,
                store,
                args.snapshot,
                args.account,
                exclude=tuple(args.exclude),
                wait=args.wait,
            )
            print(f"restored {len(done)} account(s): {', '.join(done)}")
    except BackupError as exc:
        print(f"anki-cognito-gateway {command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # The destination (most often: nothing mounted at /backups in a container, whose
        # root only root may write) or a full disk: one line saying what to do.
        where = args.to if command == "backup" else args.source
        print(
            f"anki-cognito-gateway {command}: cannot {'write' if command == 'backup' else 'read'}"
            f" {where}: {exc.strerror or exc} ({exc.filename or where}); it must be a folder this"
            f" user (uid {os.getuid()}; the image runs as uid 10001) can"
            f" {'write' if command == 'backup' else 'read'}, e.g. a volume mounted there",
            file=sys.stderr,
        )
        return 1
    return 0


def _verify(argv: list[str], config: Config) -> int:
    import tempfile

    from gateway.backup.retention import snapshots
    from gateway.backup.snapshot import BackupError, manifest_key
    from gateway.backup.store import open_store
    from gateway.backup.verify import verify

    parser = argparse.ArgumentParser(prog="python -m gateway backup verify")
    parser.add_argument(
        "snapshot",
        help="DEST/snapshots/NAME (DEST a folder or s3://bucket/prefix), or DEST: its newest",
    )
    args = parser.parse_args(argv)
    dest, _, name = args.snapshot.rstrip("/").rpartition("/snapshots/")
    if not dest:
        dest, name = args.snapshot, ""
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
