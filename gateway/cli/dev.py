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
import json
import os
import sys
from pathlib import Path

from gateway import config as config_mod
from gateway.local import standin
from gateway.local.mode import (
    DEFAULT_DATA,
    DEFAULT_PORT,
    STATE_FILE,
    add_user_command,
    banner,
    keeper,
    lan_addresses,
    local_config,
    port_free,
    running_stand_in,
    server_url,
)
from gateway.local.standin import DEMO_EMAIL, LocalModeError, LocalUser

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


def add_arguments(top: argparse.ArgumentParser) -> None:
    """The `dev` command's flags and subcommands, on its parser in the command tree (tree.py)."""
    data_help = f"data folder (default: ./{DEFAULT_DATA})"
    top.add_argument("--data", type=Path, default=DEFAULT_DATA, help=data_help)
    # Also accepted after a subcommand; SUPPRESS keeps a --data given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=argparse.SUPPRESS, help=data_help)
    top.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    top.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default: 8080)")
    # SUPPRESS keeps a --config given before `dev`; $GATEWAY_CONFIG is not read here.
    top.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="YAML settings file (Cognito settings are overridden)",
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
    commands = top.add_subparsers(dest="dev_command")
    add = commands.add_parser("add-user", parents=[common], help="add a local user")
    add.add_argument("email")
    add.add_argument("--password", help="default: a generated one, printed")
    commands.add_parser("users", parents=[common], help="list the local users and passwords")
    top.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.dev_command == "add-user":
            return add_user(args)
        if args.dev_command == "users":
            return list_users(args)
        return serve(args)
    except LocalModeError as exc:
        print(f"local mode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
