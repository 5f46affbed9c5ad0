"""Local mode's record of the people who use the portal: they come back after restarts too.

    PortalUsers(data_dir, endpoint)
        .seed()                   -> (int, bool)      seeds the stand-in for the next sign-up
        .signed_up(email, password, seed, sub)            recorded, waiting for its code
        .confirmed(email)                                 re-created from now on
        .password_set(email, password)                    after a portal password reset
        .removed(email, action)                           "delete": dropped; "disable": kept so

moto keeps users in memory only. `dev add-user` users live in `<data>/local-users.json` and are
re-created under their seed (same `sub`, same account) whenever the stand-in or local mode
restarts (gateway/local/standin.py). Someone who signs up on the portal is written to the same file
(`portal: true`) by the portal's stand-in directory (gateway/local/directory.py), which seeds the
stand-in with a fresh seed right before the sign-up so that the `sub` can be reproduced. Only
local mode builds one of these (gateway/local/mode.py `keeper()`); production never
does. The methods block (file lock, an HTTP call to the stand-in): call them in a thread.
Passwords go to the 0600 file only, never to a log.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.local import standin
from gateway.local.standin import LocalUser


class PortalUsers:
    def __init__(self, data_dir: Path, endpoint: str) -> None:
        self._data_dir = data_dir
        self._endpoint = endpoint

    def seed(self) -> tuple[int, bool]:
        """(a new seed, whether the stand-in's generator took it). A stand-in that refuses it
        (not moto) gives a `sub` that cannot be reproduced, which `bootstrap()` reports."""
        seed = secrets.randbits(48)
        return seed, standin.seed_stand_in(self._endpoint, seed)

    def signed_up(self, email: str, password: str, seed: int, sub: str) -> None:
        """Record a sign-up the stand-in just took, replacing an older one for that email (one
        the stand-in forgot: a sign-up still waiting for its code is not re-created). Another
        user whose email differs only in case stays: the stand-in took this sign-up because it
        compares names case-sensitively, and a `dev add-user Bob@…` is not a portal `bob@…`."""
        user = LocalUser(email, password, seed, sub, portal=True, confirmed=False)

        def change(users: list[LocalUser]) -> None:
            users[:] = [u for u in users if not _replaced_by_sign_up(u, email)]
            users.append(user)

        standin.update_users(self._data_dir, change)

    def confirmed(self, email: str) -> None:
        self._edit(email, confirmed=True)

    def waiting(self, sub: str) -> bool:
        """Whether `sub` is a portal sign-up still waiting for its code (not confirmed)."""
        return any(
            u.portal and not u.confirmed and u.sub == sub
            for u in standin.load_users(self._data_dir)
        )

    def password_set(self, email: str, password: str) -> None:
        self._edit(email, password=password)

    def removed(self, email: str, action: str) -> None:
        """Follow `portal.delete_cognito_user`: "delete", "disable" or "keep"."""
        if action == "disable":
            self._edit(email, disabled=True)
        elif action == "delete":
            standin.update_users(self._data_dir, lambda users: _drop(users, email))

    def _edit(self, email: str, **fields: object) -> None:
        def change(users: list[LocalUser]) -> None:
            for user in _named(users, email):
                for name, value in fields.items():
                    setattr(user, name, value)

        standin.update_users(self._data_dir, change)


def _same(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _named(users: list[LocalUser], email: str) -> list[LocalUser]:
    """The users `email` names: the ones spelled exactly so when there are any (the stand-in
    compares names case-sensitively, so `bob@…` and `Bob@…` can be two people), else the ones
    equal to it but for case."""
    exact = [u for u in users if u.email == email]
    return exact or [u for u in users if _same(u.email, email)]


def _replaced_by_sign_up(user: LocalUser, email: str) -> bool:
    """Whether a new sign-up of `email` replaces `user`: the same name exactly, or a portal
    sign-up still waiting for its code under the same name but for case."""
    if user.email == email:
        return True
    return user.portal and not user.confirmed and _same(user.email, email)


def _drop(users: list[LocalUser], email: str) -> None:
    named = _named(users, email)
    users[:] = [u for u in users if u not in named]
