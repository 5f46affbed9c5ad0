"""Local mode's parts around the gateway: its configuration (the production loader, Cognito
pointed at the stand-in), the start-up box, and the provider that re-creates a forgotten pool.
The `python -m gateway dev` command itself is gateway/cli/dev.py.

    local_config(...) -> Config      the production Config with the stand-in's Cognito settings
    server_url(host, port, prefix)   what to type in Anki
    banner(url, users, ...)          the start-up box (tests parse its lines)
    keeper(config, data_dir, endpoint, ids) -> PoolKeeper
    running_stand_in(data_dir)       where the stand-in of a running local mode is, or None
    STATE_FILE                       `<data>/local-mode.json`: that place, while it runs
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway.local import standin
from gateway.local.standin import LocalUser

DEFAULT_DATA = Path("data-local")
DEFAULT_PORT = 8080
STATE_FILE = "local-mode.json"


# -- the gateway's configuration and what to tell the user --------------------------------


def local_config(
    *,
    data_dir: Path,
    host: str,
    port: int,
    endpoint: str,
    pool_id: str,
    client_id: str,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> config_mod.Config:
    """The production loader's Config, with the Cognito settings pointed at the stand-in, in
    one gateway process (`server.processes` 1, whatever is set).

    Every other setting (workers, auth, logging, ...) comes from `config_path` and the
    environment as in production. The registry stays SQLite unless `registry.backend` says
    dynamodb; then, without a `registry.endpoint_url`, it is the stand-in too (moto serves
    DynamoDB as well; it keeps the table in memory only, so accounts are new at every start).
    """
    env = dict(os.environ if environ is None else environ)
    env.setdefault("GATEWAY_LOGGING_FORMAT", "text")
    # Local mode is a complete demo: the account portal is on unless turned off explicitly.
    env.setdefault("GATEWAY_PORTAL_ENABLED", "true")
    env.update(
        {
            # One gateway process: the portal's confirmation and reset codes live in the
            # process that printed them (gateway/local/directory.py); another process would
            # refuse the right code.
            "GATEWAY_SERVER_PROCESSES": "1",
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_SERVER_HOST": host,
            "GATEWAY_SERVER_PORT": str(port),
            "GATEWAY_COGNITO_USER_POOL_ID": pool_id,
            "GATEWAY_COGNITO_CLIENT_ID": client_id,
            "GATEWAY_COGNITO_CLIENT_SECRET": "",
            "GATEWAY_COGNITO_REGION": standin.REGION,
            "GATEWAY_COGNITO_ENDPOINT_URL": endpoint,
            "GATEWAY_COGNITO_LOCAL_STAND_IN": "true",
        }
    )
    config = config_mod.load(config_path, env)
    if config.registry.backend == "dynamodb" and not config.registry.endpoint_url:
        registry = dataclasses.replace(config.registry, endpoint_url=endpoint)
        config = dataclasses.replace(config, registry=registry)
    return config


def server_url(host: str, port: int, prefix: str = "/") -> str:
    """What to type in Anki. The trailing slash matters: Anki joins paths with `./`."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}{prefix}"


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses, from its own name (sends nothing)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({i[4][0] for i in infos if not i[4][0].startswith("127.")})


def banner(
    url: str,
    users: list[LocalUser],
    *,
    lan: list[str] | None = None,
    add_user: str = "python -m gateway dev add-user EMAIL",
    portal: bool = True,
) -> str:
    """The box printed at start-up. Tests parse its `Server URL:`/`Username:`/`Password:` lines."""
    rule = "=" * 72
    lines = [
        rule,
        "  Anki sync gateway: LOCAL MODE (Cognito stand-in on this machine, no AWS)",
        "",
        "  In Anki, set the sync server and log in with:",
        f"    Server URL:  {url}",
    ]
    for user in users:
        lines += [f"    Username:    {user.email}", f"    Password:    {user.password}", ""]
    if portal:
        lines += [f"  Account portal (sign up, set-up steps, sign out devices): {url}account/", ""]
    lines += [
        "  Anki desktop: Preferences > Syncing > Self-hosted sync server, then Sync.",
        "  AnkiDroid: Settings > Sync > Custom sync server (keep the trailing slash).",
    ]
    if lan is not None:
        hosts = ", ".join(lan) if lan else "<this machine's LAN address>"
        lines.append(f"  Phones on your network: http://<one of: {hosts}>:{url.split(':')[-1]}")
    lines += [
        f"  More users: {add_user}",
        "  Stop: Ctrl+C",
        rule,
    ]
    return "\n".join(lines)


def add_user_command(data: Path) -> str:
    """The add-user command line to print, runnable as shown from the current folder."""
    python = Path(sys.executable)
    shown = os.path.relpath(python) if python.is_relative_to(Path.cwd()) else "python"
    data_arg = "" if data == DEFAULT_DATA else f" --data {data}"
    return f"{shown} -m gateway dev add-user EMAIL{data_arg}"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def keeper(config: config_mod.Config, data_dir: Path, endpoint: str, ids: tuple[str, str]) -> Any:
    """The Cognito provider, re-creating the stand-in's pool and users when it forgot them."""
    from gateway.identity.cognito import CognitoProvider
    from gateway.local.keeper import PoolKeeper
    from gateway.local.users import PortalUsers

    def recreate() -> tuple[str, str]:
        users = standin.load_users(data_dir)
        pool_id, client_id, warnings = standin.bootstrap(endpoint, users)
        standin.record_subs(data_dir, users)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return pool_id, client_id

    users = PortalUsers(data_dir, endpoint)
    return PoolKeeper(CognitoProvider(config.cognito), recreate, ids, users=users)


def running_stand_in(data_dir: Path) -> dict[str, Any] | None:
    """Where the stand-in of local mode running on `data_dir` is, if it is running."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state
