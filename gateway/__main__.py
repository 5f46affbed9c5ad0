"""Command line: `python -m gateway [--config PATH] {serve,check-config,dev,accounts}`.

Only parses arguments, loads the configuration and hands over; exits non-zero with every
configuration problem listed when the configuration is invalid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEFAULT_CONFIG = Path("config/gateway.yaml")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dev"]:
        from gateway.local.mode import main as local_main

        return local_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ["GATEWAY_CONFIG"]) if os.environ.get("GATEWAY_CONFIG") else None,
        help=f"YAML settings file (default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG} if present)",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "check-config", "dev", "accounts", "health", "backup", "restore"],
        help="serve (default); check-config: validate and exit; dev: local mode (see README); "
        "accounts list|disable NAME|enable NAME|sign-out NAME|create-table|copy-registry "
        "[--from FILE] [--dry-run]|import DIR [--dry-run]; health: exit 0 when the gateway on "
        "this machine answers /health "
        "(container health checks); backup --to DEST; restore --from DEST",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "dev":
        # Local mode builds its own configuration around the stand-in; it only reads --config.
        from gateway.local.mode import main as local_main

        return local_main((["--config", str(args.config)] if args.config else []) + rest)
    takes_arguments = ("accounts", "backup", "restore", "health")
    if rest and args.command not in takes_arguments and rest != ["--probe"]:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from gateway import config as config_mod

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    try:
        if args.command == "health":
            return health(rest, path)
        config = config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"anki-cognito-gateway: {exc}", file=sys.stderr)
        return 2
    command = config.worker_command()
    if shutil.which(command[0]) is None:
        print(f"anki-cognito-gateway: workers.command: {command[0]!r} not found", file=sys.stderr)
        return 2
    if args.command == "accounts":
        from gateway.cli.accounts import main as admin_main

        return admin_main(rest, config)
    if args.command in ("backup", "restore"):
        from gateway.backup import main as backup_main

        return backup_main(args.command, rest, config)
    from gateway.cli.datadir import problem

    unwritable = problem(config.data_dir)
    if unwritable is not None:
        print(f"anki-cognito-gateway: {unwritable}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"configuration OK ({path or 'defaults and environment'})")
        if "--probe" in rest:
            from gateway.ops.probe import probe

            findings = probe(config)
            for finding in findings:
                mark = "ok  " if finding.ok else "FAIL"
                print(
                    f"{mark} {finding.what}" + (f"\n     fix: {finding.fix}" if finding.fix else "")
                )
            return 0 if all(f.ok for f in findings) else 1
        return 0
    from gateway.processes import serve

    return serve(config)


def health(argv: list[str], path: Path | None) -> int:
    """0 when GET <prefix>health on this machine answers 200 within 4 s, else 1. Reads only the
    `server` settings (a local-mode container has no production configuration); `--url URL`
    checks that URL instead (the Cognito stand-in's health check: no argument with a space)."""
    import urllib.request

    from gateway.config import load_server

    parser = argparse.ArgumentParser(prog="python -m gateway health")
    parser.add_argument("--url", help="check this URL instead of this gateway's /health")
    args = parser.parse_args(argv)
    if args.url:
        url = args.url
    else:
        server = load_server(path)
        url = f"http://127.0.0.1:{server.port}{server.path_prefix}health"
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 - an operator's URL
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
