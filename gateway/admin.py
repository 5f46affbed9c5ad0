"""`python -m gateway accounts ...`: look at and switch off local accounts from a shell.

    accounts list                 every account: name, status, Cognito username, email, last
                                  sync, collection size, media files and their size
    accounts disable NAME         the account's keys get 403 at once; logins are refused
    accounts enable NAME          undoes `disable` (and a suspension after a Cognito re-check)
    accounts sign-out NAME        "log out everywhere": every device's key gets 403 at its next
                                  request; the next login gets a new key (the account's key
                                  generation moves on; other accounts are untouched)
    accounts import DIR [--dry-run]
                                  take over the earlier server's collections/ folders
                                  (gateway/importer/); --dry-run prints the plan only

Works on the registry file directly, so it also works while the gateway runs (SQLite WAL);
a running gateway sees the new status on the account's next request.
"""

from __future__ import annotations

import argparse
import time

from gateway.config import Config
from gateway.registry import ACTIVE, DISABLED, Registry
from gateway.usage import human_bytes, usage


def main(argv: list[str], config: Config) -> int:
    if argv[:1] == ["import"]:
        from gateway.importer import main as import_main

        return import_main(argv[1:], config)
    parser = argparse.ArgumentParser(prog="python -m gateway accounts")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list")
    for action in ("disable", "enable", "sign-out"):
        sub.add_parser(action).add_argument("name")
    args = parser.parse_args(argv)
    registry = Registry(config.data_dir / "registry.sqlite3", config.collections_dir)
    try:
        if args.action == "list":
            print("name\tstatus\tusername\temail\tlast sync\tcollection\tmedia files\tmedia")
            for a in registry.all():
                seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.last_seen))
                used = usage(registry.folder(a))
                print(
                    f"{a.name}\t{a.status}\t{a.cognito_username}\t{a.email or '-'}\t{seen}"
                    f"\t{human_bytes(used.collection_bytes)}\t{used.media_files}"
                    f"\t{human_bytes(used.media_bytes)}"
                )
            return 0
        account = registry.get_by_name(args.name)
        if account is None:
            print(f"no account named {args.name!r}")
            return 1
        if args.action == "sign-out":
            generation = registry.sign_out(account.sub)
            print(f"{account.name}: signed out everywhere (key generation {generation})")
            return 0
        registry.set_status(account.sub, DISABLED if args.action == "disable" else ACTIVE)
        print(f"{account.name}: {args.action}d")
        return 0
    finally:
        registry.close()
