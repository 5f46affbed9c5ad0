"""Backups: `python -m gateway backup` and `python -m gateway restore`.

    backup --to DIR|s3://bucket/prefix [--keep N] [--include-secret]
    backup --list --to DEST
    restore --from DIR|s3://bucket/prefix [--snapshot NAME] [--account NAME ...]

snapshot.py takes consistent snapshots while people sync; restore.py puts accounts back under
their locks; store.py is the folder or S3 behind both. Exit status: 0, or 1 with one line
saying what to do (BackupError).
"""

from __future__ import annotations

import argparse
import sys

from gateway.config import Config


def main(command: str, argv: list[str], config: Config) -> int:
    from gateway.backup.restore import restore
    from gateway.backup.snapshot import BackupError, snapshots, take
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
    args = parser.parse_args(argv)
    try:
        if command == "backup":
            store = open_store(args.to)
            if args.list:
                for name in snapshots(store):
                    print(name)
                return 0
            taken = take(config, store, include_secret=args.include_secret, keep=args.keep)
            print(f"snapshot {taken.name} in {store.url}")
            if taken.busy:
                # Not an error: they are copied by a later run, once their servers are idle.
                print(f"busy (syncing; copied next time): {', '.join(taken.busy)}")
        else:
            store = open_store(args.source)
            done = restore(config, store, args.snapshot, args.account)
            print(f"restored {len(done)} account(s): {', '.join(done)}")
    except BackupError as exc:
        print(f"anki-cognito-gateway {command}: {exc}", file=sys.stderr)
        return 1
    return 0
