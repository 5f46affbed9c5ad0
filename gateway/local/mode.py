"""Local mode: the whole product on one machine, no AWS account (`python -m gateway dev`).

A Cognito stand-in (moto's server, gateway/local/standin.py) runs on loopback with a user pool,
an app client and the local users (a demo user on first start). The gateway then runs exactly as in
production: the same `CognitoProvider` (boto3 with `endpoint_url` pointing at the stand-in), the
same registry, the same stock sync-server workers, the same configuration loader. Only two
settings differ, `cognito.endpoint_url` and `cognito.local_stand_in: true`, and the loader accepts
those for a loopback or compose-internal address only.

    python -m gateway dev [--data DIR] [--host H] [--port P] [--config YAML]
                          [--cognito-port P | --cognito-endpoint URL] [--public-url URL]
    python -m gateway dev add-user EMAIL [--password P] [--data DIR]
    python -m gateway dev users [--data DIR]

`add-user` writes `<data>/local-users.json` and, when local mode is running on that data folder,
also creates the user in its stand-in at once (`<data>/local-mode.json` says where that is).
People who sign up on the portal are written there too (gateway/local/users.py, handed to the
portal through the PoolKeeper `keeper()` builds).
The start-up box goes to stdout (tests parse it); logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
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
from gateway.local.standin import DEMO_EMAIL, LocalModeError, LocalUser

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
    """The production loader's Config, with the Cognito settings pointed at the stand-in.

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


# -- commands -----------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    data_dir: Path = args.data.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not port_free(args.host, args.port):
        raise LocalModeError(
            f"port {args.port} on {args.host} is in use: is local mode already running? "
            f"Or pick another: python -m gateway dev --port {args.port + 1}"
        )
    if not standin.load_users(data_dir):
        demo = standin.new_user(DEMO_EMAIL)
        standin.update_users(data_dir, lambda saved: None if saved else saved.append(demo))
    users = standin.load_users(data_dir)
    standin.use_dummy_aws_credentials()
    # docker-compose.yml's `local` profile wires the stand-in in through the gateway's own
    # setting; a --cognito-port given explicitly still means "start one in this process".
    external = args.cognito_endpoint or (
        None if args.cognito_port else os.environ.get("GATEWAY_COGNITO_ENDPOINT_URL")
    )
    if external:
        if not external.startswith(("http://", "https://")):
            raise LocalModeError(f"{external!r}: the Cognito stand-in needs an http(s):// URL")
        stand_in: contextlib.AbstractContextManager[str] = contextlib.nullcontext(
            external.rstrip("/")
        )
    else:
        stand_in = standin.in_process_stand_in(args.cognito_port)
    with stand_in as endpoint:
        standin.wait_for(endpoint, args.cognito_wait)
        pool_id, client_id, warnings = standin.bootstrap(endpoint, users)
        standin.record_subs(data_dir, users)
        try:
            config = local_config(
                data_dir=data_dir,
                host=args.host,
                port=args.port,
                endpoint=endpoint,
                pool_id=pool_id,
                client_id=client_id,
                config_path=args.config,
            )
        except config_mod.ConfigError as exc:
            raise LocalModeError(str(exc)) from exc
        if config.registry.backend == "dynamodb":
            from gateway.registry.dynamo import create_table, make_client

            create_table(make_client(config), config.registry.table)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        url = args.public_url or server_url(args.host, args.port, config.server.path_prefix)
        lan = lan_addresses() if args.host in ("0.0.0.0", "::") and not args.public_url else None
        shown = [u for u in users if not u.portal]
        text = banner(
            url, shown, lan=lan, add_user=add_user_command(args.data), portal=config.portal.enabled
        )
        print(text, flush=True)
        state = data_dir / STATE_FILE
        state.write_text(json.dumps({"endpoint": endpoint, "pool_id": pool_id, "pid": os.getpid()}))
        try:
            from gateway.processes import serve as serve_processes

            code = serve_processes(
                config, lambda: keeper(config, data_dir, endpoint, (pool_id, client_id))
            )
        finally:
            state.unlink(missing_ok=True)
    return code


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


def add_user(args: argparse.Namespace) -> int:
    data_dir: Path = args.data.absolute()
    email = args.email.strip()
    if "@" not in email:
        raise LocalModeError(f"{email!r}: give an email address (it is also the username)")
    if args.password is not None and len(args.password) < 8:
        raise LocalModeError("the password must have at least 8 characters")
    user = standin.new_user(email, args.password)

    def append(users: list[LocalUser]) -> None:
        if any(u.email.casefold() == email.casefold() for u in users):
            raise LocalModeError(f"{email} exists already: python -m gateway dev users")
        users.append(user)

    standin.update_users(data_dir, append)
    live = running_stand_in(data_dir)
    if live is not None:
        standin.use_dummy_aws_credentials()
        try:
            warning = standin.ensure_user(
                standin.cognito_client(live["endpoint"]), live["endpoint"], live["pool_id"], user
            )
        except Exception as exc:  # the stand-in went away: the next start creates the user
            warning, live = f"the running stand-in did not take the user ({exc})", None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    standin.record_subs(data_dir, [user])
    when = "now (local mode is running)" if live else "at the next start of local mode"
    print(f"Added {email}; it can log in {when}.")
    print(f"    Username:    {user.email}\n    Password:    {user.password}")
    return 0


def running_stand_in(data_dir: Path) -> dict[str, Any] | None:
    """Where the stand-in of local mode running on `data_dir` is, if it is running."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def list_users(args: argparse.Namespace) -> int:
    users = standin.load_users(args.data.absolute())
    if not users:
        print(f"No local users yet in {args.data}; `python -m gateway dev` creates {DEMO_EMAIL}.")
    for user in users:
        # A portal user's password is the person's own: not shown.
        shown = "(set on the portal)" if user.portal else user.password
        state = "" if user.confirmed else "\t(waiting for its code)"
        print(f"{user.email}\t{shown}{state}")
    return 0


def parser() -> argparse.ArgumentParser:
    data_help = f"data folder (default: ./{DEFAULT_DATA})"
    top = argparse.ArgumentParser(
        prog="python -m gateway dev",
        description="Local mode: the gateway with a Cognito stand-in on this machine (no AWS).",
    )
    top.add_argument("--data", type=Path, default=DEFAULT_DATA, help=data_help)
    # Also accepted after a subcommand; SUPPRESS keeps a --data given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=argparse.SUPPRESS, help=data_help)
    top.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    top.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: 8080)")
    top.add_argument(
        "--config", type=Path, help="YAML settings file (Cognito settings are overridden)"
    )
    stand_in = top.add_mutually_exclusive_group()
    stand_in.add_argument(
        "--cognito-port", type=int, default=0, help="port of the stand-in (default: any free one)"
    )
    stand_in.add_argument(
        "--cognito-endpoint",
        help="use a stand-in that runs already, e.g. http://cognito-local:5000 (default: "
        "$GATEWAY_COGNITO_ENDPOINT_URL, as docker compose sets it; else one in this process)",
    )
    top.add_argument(
        "--cognito-wait", type=float, default=30.0, help="seconds to wait for the stand-in"
    )
    top.add_argument("--public-url", help="the server URL to print, e.g. when behind a port map")
    commands = top.add_subparsers(dest="command")
    add = commands.add_parser("add-user", parents=[common], help="add a local user")
    add.add_argument("email")
    add.add_argument("--password", help="default: a generated one, printed")
    commands.add_parser("users", parents=[common], help="list the local users and passwords")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "add-user":
            return add_user(args)
        if args.command == "users":
            return list_users(args)
        return serve(args)
    except LocalModeError as exc:
        print(f"local mode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
