"""The command line, one argparse tree: `python -m gateway [--config PATH] COMMAND ...`.

    serve (the default)  check-config [--probe]  health         cli/server.py
    dev [add-user EMAIL | users]                                cli/dev.py (no configuration
                                                                file needed: local mode makes one)
    accounts list|disable|enable|sign-out|quota|export|prune|move|create-table|copy-registry|import
                                                                cli/accounts.py
    backup [verify] / restore                                   cli/backups.py

`main(argv)` parses, loads the configuration (every problem listed, exit 2; `health` reads the
`server` settings only), checks that the worker command exists (exit 2) and runs the command's
handler, returning its exit status. Wrong usage exits 2 (argparse). `--config` is also taken
after the command.
`run(argv, config)` runs one command with a configuration already loaded (tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from gateway.cli import accounts, backups, dev, server
from gateway.config import Config

DEFAULT_CONFIG = Path("config/gateway.yaml")

DESCRIPTION = """\
Command line: `python -m gateway [--config PATH]
{serve,check-config,health,dev,accounts,backup,restore}`.

Only parses arguments, loads the configuration and hands over; exits non-zero with every
configuration problem listed when the configuration is invalid.
"""


def parser() -> argparse.ArgumentParser:
    config_help = f"YAML settings file (default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG} if present)"
    top = argparse.ArgumentParser(prog="python -m gateway", description=DESCRIPTION)
    top.add_argument("--config", type=Path, default=None, help=config_help)
    # The same option after the command; SUPPRESS keeps one given before it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    commands = top.add_subparsers(dest="command", metavar="command")
    top.set_defaults(run=server.serve)
    commands.add_parser("serve", parents=[after], help="run the gateway (the default)")
    server.add_check_arguments(
        commands.add_parser("check-config", parents=[after], help="validate and exit")
    )
    server.add_health_arguments(
        commands.add_parser(
            "health",
            parents=[after],
            help="exit 0 when the gateway on this machine answers /health "
            "(container health checks)",
        )
    )
    dev.add_arguments(
        commands.add_parser(
            "dev",
            help="local mode (docs/getting-started.md)",
            description="Local mode: the gateway with a Cognito stand-in on this machine (no AWS).",
        )
    )
    accounts.add_arguments(
        commands.add_parser(
            "accounts",
            parents=[after],
            help="list|disable NAME|enable NAME|sign-out NAME|quota NAME|export NAME --to FILE|"
            "prune --inactive-days N|move NAME --to NODE|create-table|"
            "copy-registry [--from FILE] [--dry-run]|import DIR [--dry-run]",
        ),
        [after],
    )
    backups.add_backup_arguments(
        commands.add_parser("backup", parents=[after], help="backup --to DEST; backup verify DEST"),
        [after],
    )
    backups.add_restore_arguments(
        commands.add_parser("restore", parents=[after], help="restore --from DEST")
    )
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev":
        # Local mode builds its own configuration around the stand-in; it reads only an explicit
        # --config, never $GATEWAY_CONFIG.
        return args.run(args)

    from gateway import config as config_mod

    if args.config is None and os.environ.get("GATEWAY_CONFIG"):
        args.config = Path(os.environ["GATEWAY_CONFIG"])
    args.config = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        if args.command == "health":
            return server.health(args.url, args.config)
        config = config_mod.load(args.config, identity=not _offline(args))
    except config_mod.ConfigError as exc:
        print(f"anki-cognito-gateway: {exc}", file=sys.stderr)
        return 2
    command = config.worker_command()
    if shutil.which(command[0]) is None:
        print(f"anki-cognito-gateway: workers.command: {command[0]!r} not found", file=sys.stderr)
        return 2
    return args.run(args, config)


#: `accounts` actions that never call Cognito.
_OFFLINE_ACTIONS = frozenset({"list", "quota", "export"})


def _offline(args: argparse.Namespace) -> bool:
    """Whether the command never calls Cognito, so needs no user pool or app client settings
    (an operator backing up local mode's data folder has none)."""
    if args.command in ("backup", "restore"):
        return True
    return args.command == "accounts" and getattr(args, "action", None) in _OFFLINE_ACTIONS


def run(argv: list[str], config: Config) -> int:
    args = parser().parse_args(argv)
    return args.run(args, config)
