"""`python -m gateway [serve]`, `check-config [--probe]` and `health`: the commands about the
gateway process itself.

    serve          run the gateway until SIGINT/SIGTERM (one process or several: processes.py)
    check-config   exit 0 when the configuration loads and the data folder takes a file;
                   --probe also asks AWS (ops/probe.py): 1 when a probe fails
    health [--url URL]
                   exit 0 when the gateway on this machine (or URL) answers <prefix>health
                   with 200 within 4 s, else 1 (container health checks); reads only the
                   `server` settings

An unwritable data folder is one line naming the fix, exit 2 (cli/datadir.py).
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from pathlib import Path

from gateway.config import Config


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", action="store_true", help="also ask AWS (ops/probe.py)")
    parser.set_defaults(run=check_config)


def _unwritable(config: Config) -> bool:
    from gateway.cli.datadir import problem

    found = problem(config.data_dir)
    if found is not None:
        print(f"anki-cognito-gateway: {found}", file=sys.stderr)
    return found is not None


def serve(args: argparse.Namespace, config: Config) -> int:
    if _unwritable(config):
        return 2
    from gateway.processes import serve as serve_processes

    return serve_processes(config)


def check_config(args: argparse.Namespace, config: Config) -> int:
    if _unwritable(config):
        return 2
    print(f"configuration OK ({args.config or 'defaults and environment'})")
    if not args.probe:
        return 0
    from gateway.ops.probe import probe

    findings = probe(config)
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        print(f"{mark} {finding.what}" + (f"\n     fix: {finding.fix}" if finding.fix else ""))
    return 0 if all(f.ok for f in findings) else 1


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="check this URL instead of this gateway's /health")


def health(url: str | None, path: Path | None) -> int:
    """0 when GET <prefix>health on this machine answers 200 within 4 s, else 1. Reads only the
    `server` settings (a local-mode container has no production configuration); `--url URL`
    checks that URL instead (the Cognito stand-in's health check: no argument with a space).
    ConfigError when the server settings are invalid."""
    from gateway.config import load_server

    if url is None:
        server = load_server(path)
        url = f"http://127.0.0.1:{server.port}{server.path_prefix}health"
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 - an operator's URL
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError):
        return 1
