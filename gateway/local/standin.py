"""The Cognito stand-in of local mode: moto's server, a pool, an app client, the local users.

Local users live in `<data>/local-users.json` (owner-only: it holds their passwords) and are
(re-)created in the stand-in at every start of local mode.

Accounts survive restarts although moto forgets everything. moto gives each new user a random
`sub` and ignores a `sub` passed to AdminCreateUser (checked with moto 5.2), while the gateway keys
accounts on `sub`. But moto draws every id from one seedable generator (`POST /moto-api/seed?a=N`),
and AdminCreateUser draws the new user's `sub` first. So each local user keeps a seed and is
re-created under it: same seed, same `sub`, same account and collection. `expected_sub()` says
which `sub` a seed yields, so a different one (another request drew from the generator in between)
is caught and the user re-created. If it stays different (a moto upgrade changed the generator),
the caller is warned: that user gets a new, empty account, the old folder stays on disk.

People who sign up on the portal in local mode are local users too (`portal: true`): the
portal's stand-in directory (gateway/local/directory.py) records them through `PortalUsers`
(gateway/local/users.py), so they come back like the others. Every change to the file goes
through `update_users()`: a lock file serialises the writers (`dev add-user`, the running
gateway), and the file is replaced atomically.

Nothing here talks to AWS: the boto3 client always has the stand-in's `endpoint_url`, and
`use_dummy_aws_credentials()` replaces any real credentials in this process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

DEMO_EMAIL = "demo@example.com"
USERS_FILE = "local-users.json"
USERS_LOCK = "local-users.lock"
REGION = "us-east-1"
POOL_NAME = "anki-gateway-local"
CLIENT_NAME = "anki-gateway"
#: Credentials for the stand-in only. Set in this process, so real AWS credentials from the
#: environment or ~/.aws are never used, and never sent anywhere, in local mode.
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "local-stand-in",
    "AWS_SECRET_ACCESS_KEY": "local-stand-in",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN")
SUB_ATTEMPTS = 3
#: moto's generator is seeded with these before the pool and the app client are created, so
#: they get the same ids from every stand-in (users have seeds of their own).
POOL_SEED = 0x616E6B69
CLIENT_SEED = 0x636C6E74


class LocalModeError(Exception):
    """A problem local mode explains to the person at the terminal, then exits non-zero."""


# -- the local users ----------------------------------------------------------------------


@dataclass
class LocalUser:
    email: str
    password: str
    #: moto's generator is seeded with this before the user is created (see the module doc).
    seed: int
    #: The `sub` the user got; "" until first created.
    sub: str = ""
    #: Signed up on the portal: the password is the person's own (not shown in the box).
    portal: bool = False
    #: False while a portal sign-up waits for its code; such users are not re-created.
    confirmed: bool = True
    #: Disabled on the portal (`portal.delete_cognito_user: disable`); re-created disabled.
    disabled: bool = False


def new_password() -> str:
    """Easy to type on a phone; meets Cognito's default policy (upper, lower, digit, symbol)."""
    return f"Anki-{secrets.token_hex(3)}-{secrets.randbelow(90) + 10}"


def new_user(email: str, password: str | None = None) -> LocalUser:
    return LocalUser(email=email, password=password or new_password(), seed=secrets.randbits(48))


def load_users(data_dir: Path) -> list[LocalUser]:
    path = data_dir / USERS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise LocalModeError(f"{path}: cannot read it ({exc}); fix or delete it") from exc
    try:
        return [LocalUser(**entry) for entry in raw["users"]]
    except (KeyError, TypeError) as exc:
        raise LocalModeError(f"{path}: unexpected content; fix or delete it") from exc


def save_users(data_dir: Path, users: list[LocalUser]) -> None:
    """Written atomically and readable by the owner only: it holds passwords. Callers that
    read the file first hold the lock: `update_users()`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / USERS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"users": [asdict(u) for u in users]}, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


T = TypeVar("T")


def update_users(data_dir: Path, change: Callable[[list[LocalUser]], T]) -> T:
    """Load the users, `change(users)` in place, save them; returns what `change` returned.

    Holds an exclusive lock (`flock` on `<data>/local-users.lock`) throughout, so concurrent
    writers in this or other processes never lose each other's changes. Raises LocalModeError
    for an unreadable file; `change` may raise to leave the file as it was.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        users = load_users(data_dir)
        result = change(users)
        save_users(data_dir, users)
        return result
    finally:
        os.close(fd)  # releases the lock


def record_subs(data_dir: Path, created: list[LocalUser]) -> None:
    """Store the `sub`s `bootstrap()` gave `created` in the file, leaving other changes made
    meanwhile (a user added or removed) alone."""
    subs = {u.email.casefold(): u.sub for u in created if u.sub}

    def change(users: list[LocalUser]) -> None:
        for user in users:
            user.sub = subs.get(user.email.casefold(), user.sub)

    update_users(data_dir, change)


# -- the Cognito stand-in -----------------------------------------------------------------


def use_dummy_aws_credentials(environ: Any = os.environ) -> None:
    for name in _AWS_UNSET:
        environ.pop(name, None)
    environ.update(DUMMY_AWS)


@contextlib.contextmanager
def in_process_stand_in(port: int) -> Iterator[str]:
    """moto's server on 127.0.0.1 in a thread of this process; yields its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request to the stand-in; the gateway's own log is what matters here.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except OSError as exc:
        raise LocalModeError(f"cannot start the Cognito stand-in on port {port}: {exc}") from exc
    host, bound = server.get_host_and_port()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()


def cognito_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "cognito-idp",
        endpoint_url=endpoint,
        region_name=REGION,
        config=BotoConfig(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    )


def wait_for(endpoint: str, timeout: float) -> None:
    """Wait until the stand-in answers (a compose stand-in may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers: not moto, perhaps, but up
        except OSError as exc:
            if time.monotonic() > deadline:
                raise LocalModeError(
                    f"the Cognito stand-in at {endpoint} does not answer: {exc}"
                ) from exc
            time.sleep(0.5)


def seed_stand_in(endpoint: str, seed: int) -> bool:
    url = f"{endpoint}/moto-api/seed?a={seed}"
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - http(s), checked
    try:
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            return True
    except OSError:
        return False


def expected_sub(seed: int) -> str | None:
    """The `sub` moto gives a user created right after seeding with `seed` (None: unknown)."""
    try:
        from moto.moto_api._internal.moto_random import MotoRandom
    except ImportError:
        return None
    return str(MotoRandom(seed).uuid4())


def ensure_pool(boto: Any, endpoint: str | None = None) -> tuple[str, str]:
    """The stand-in's pool and app client (found by name, else created): (pool id, client id).

    With `endpoint`, moto's generator is seeded before each is created (`POOL_SEED`,
    `CLIENT_SEED`), so a stand-in that restarted and forgot them gives back the same ids: the
    running gateway's configuration stays right (gateway/local/keeper.py).
    """
    pools = boto.list_user_pools(MaxResults=60)["UserPools"]
    pool_id = next((p["Id"] for p in pools if p["Name"] == POOL_NAME), None)
    if pool_id is None:
        if endpoint:
            seed_stand_in(endpoint, POOL_SEED)
        pool_id = boto.create_user_pool(
            PoolName=POOL_NAME,
            # Relaxed for `add-user --password`; a production pool sets its own policy.
            Policies={
                "PasswordPolicy": {
                    "MinimumLength": 8,
                    "RequireUppercase": False,
                    "RequireLowercase": False,
                    "RequireNumbers": False,
                    "RequireSymbols": False,
                }
            },
            # As every pool for this product should be (README, "The user pool"): one user
            # whatever the case they type. moto records it but compares case-sensitively; the
            # gateway's lower-case retry covers that.
            UsernameConfiguration={"CaseSensitive": False},
        )["UserPool"]["Id"]
    clients = boto.list_user_pool_clients(UserPoolId=pool_id, MaxResults=60)["UserPoolClients"]
    client_id = next((c["ClientId"] for c in clients if c["ClientName"] == CLIENT_NAME), None)
    if client_id is None:
        if endpoint:
            seed_stand_in(endpoint, CLIENT_SEED)
        # As README.md tells operators to set up a real app client: the admin password flow,
        # and `email` readable so the IdToken carries it. No secret: local mode needs none.
        client_id = boto.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=CLIENT_NAME,
            GenerateSecret=False,
            ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            ReadAttributes=["email", "email_verified"],
        )["UserPoolClient"]["ClientId"]
    return pool_id, client_id


def _sub_of(attributes: list[dict[str, str]]) -> str:
    return next(a["Value"] for a in attributes if a["Name"] == "sub")


def ensure_user(boto: Any, endpoint: str, pool_id: str, user: LocalUser) -> str | None:
    """Create `user` in the stand-in under its seed (or keep it); set its password.

    Returns a warning for the terminal, or None. Updates `user.sub`.
    """
    want = user.sub or expected_sub(user.seed)
    warning = None
    try:
        existing = boto.admin_get_user(UserPoolId=pool_id, Username=user.email)
        got = _sub_of(existing["UserAttributes"])
    except boto.exceptions.UserNotFoundException:
        got = None
    for _ in range(SUB_ATTEMPTS):
        if got is not None and (want is None or got == want):
            break
        if got is not None:
            boto.admin_delete_user(UserPoolId=pool_id, Username=user.email)
        seeded = seed_stand_in(endpoint, user.seed)
        created = boto.admin_create_user(
            UserPoolId=pool_id,
            Username=user.email,
            UserAttributes=[
                {"Name": "email", "Value": user.email},
                {"Name": "email_verified", "Value": "true"},
            ],
            MessageAction="SUPPRESS",
        )
        got = _sub_of(created["User"]["Attributes"])
        if not seeded:
            want = None  # not moto: whatever it gives is what there is
    assert got is not None
    # Only a user that had a `sub` loses something; a new one simply starts with this one.
    if user.sub and got != user.sub:
        warning = (
            f"{user.email}: the stand-in gave a new identity (sub {got}, was {want}); this user "
            "gets a new, empty account. Its old collection stays in the collections folder."
        )
    user.sub = got
    boto.admin_set_user_password(
        UserPoolId=pool_id, Username=user.email, Password=user.password, Permanent=True
    )
    if user.disabled:
        boto.admin_disable_user(UserPoolId=pool_id, Username=user.email)
    return warning


def bootstrap(endpoint: str, users: list[LocalUser]) -> tuple[str, str, list[str]]:
    """Pool, app client and users in the stand-in: (pool id, client id, warnings).

    Portal sign-ups still waiting for their code are left out: the person signs up again.
    """
    boto = cognito_client(endpoint)
    pool_id, client_id = ensure_pool(boto, endpoint)
    confirmed = [u for u in users if u.confirmed]
    warnings = [w for u in confirmed if (w := ensure_user(boto, endpoint, pool_id, u))]
    return pool_id, client_id, warnings
