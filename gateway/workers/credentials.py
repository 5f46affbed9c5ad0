"""The gateway secret and the per-account sync-server passwords derived from it.

Each worker runs with `SYNC_USER1=<account>:<password>` where the password is
HMAC-SHA256(gateway secret, account and its key generation) — never the user's Cognito
password. The stock server's host key is sha1("<account>:<password>"), so the same secret and
generation yield the same keys after a restart; a new generation ("sign out all devices")
gives the account new keys, and a new secret invalidates every issued key (clients must log in
again). Generation 0 derives exactly the passwords of releases that had no generations, so an
upgrade logs nobody out.

Without a configured secret, one is generated on first start into `<data>/gateway.secret`
(mode 0600) and reused after that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from gateway.config import Secret

SECRET_FILE = "gateway.secret"  # noqa: S105 - a file name, not a secret


def load_or_create(data_dir: Path, configured: Secret | None) -> bytes:
    if configured is not None:
        return configured.reveal().encode()
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two gateways starting at once on one data folder agree on a single secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # another process may be writing it right now
            value = path.read_text(encoding="ascii").strip()
            if len(value) >= 32:
                return value.encode()
            time.sleep(0.01)
        raise ValueError(
            f"{path} is empty or too short; delete it only if no client has a key"
        ) from None
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    return value.encode()


def password_deriver(secret: bytes) -> Callable[[str, int], str]:
    """`password_for(account, generation)`: the worker password, 64 hex characters."""

    def password_for(account: str, generation: int = 0) -> str:
        if generation < 0:
            raise ValueError("a key generation is never negative")
        message = b"worker-password\0" + account.encode()
        if generation:
            message += b"\0generation\0" + str(generation).encode()
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    return password_for
