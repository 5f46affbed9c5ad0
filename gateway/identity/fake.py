"""An in-memory identity provider for tests and benchmarks.

Behaves like a Cognito pool with case-insensitive usernames (Cognito's default) and email as a
sign-in alias: `authenticate` answers an `Identity` or BadCredentials, `lookup` (by username or
email) and `lookup_sub` an `Identity` or UnknownUser. As with Cognito, an email only appears in
an `Identity` while it is verified. `calls` counts provider calls, `delay` makes each call take
that long (without blocking the loop), and `fail_with` makes every call raise that exception,
for outages (ProviderUnavailable), challenges (ChallengeRequired), lockouts and the like.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import uuid
from dataclasses import dataclass

from gateway.identity.provider import BadCredentials, Identity, UnknownUser


@dataclass
class _User:
    identity: Identity
    password: str
    enabled: bool = True
    email_verified: bool = True

    def public(self) -> Identity:
        email = self.identity.email if self.email_verified else None
        return dataclasses.replace(self.identity, email=email, enabled=self.enabled)


class FakeProvider:
    def __init__(self, *, delay: float = 0.0, fail_with: Exception | None = None) -> None:
        self.delay = delay
        self.fail_with = fail_with
        self.calls = 0
        #: lookup_sub calls that named the user (the cheap per-user read in Cognito).
        self.lookups_by_username = 0
        self.closed = False
        self._users: dict[str, _User] = {}  # by casefolded username
        self._aliases: dict[str, str] = {}  # casefolded email → casefolded username

    def add_user(
        self,
        username: str,
        password: str,
        email: str | None = None,
        *,
        email_verified: bool = True,
    ) -> str:
        """Add an enabled user; returns its new `sub`."""
        key = username.casefold()
        if key in self._users or key in self._aliases:
            raise ValueError(f"user {username!r} exists")
        if email is not None and (
            email.casefold() in self._aliases or email.casefold() in self._users
        ):
            raise ValueError(f"email {email!r} is taken")
        sub = str(uuid.uuid4())
        identity = Identity(sub=sub, username=username, email=email)
        self._users[key] = _User(identity, password, email_verified=email_verified)
        if email is not None:
            self._aliases[email.casefold()] = key
        return sub

    def disable(self, username: str) -> None:
        self._get(username).enabled = False

    def enable(self, username: str) -> None:
        self._get(username).enabled = True

    def set_password(self, username: str, password: str) -> None:
        self._get(username).password = password

    def delete(self, username: str) -> None:
        """Remove the user; the same username may then be added again (with a new `sub`)."""
        user = self._get(username)
        del self._users[user.identity.username.casefold()]
        self._aliases = {a: k for a, k in self._aliases.items() if self._users.get(k) is not None}

    async def authenticate(self, username: str, password: str) -> Identity:
        await self._call()
        user = self._find(username)
        # Compared as bytes: compare_digest refuses non-ASCII str.
        if (
            user is None
            or not user.enabled
            or not hmac.compare_digest(user.password.encode(), password.encode())
        ):
            raise BadCredentials("fake provider: wrong username or password")
        return user.public()

    async def lookup(self, username: str) -> Identity:
        await self._call()
        user = self._find(username)
        if user is None:
            raise UnknownUser("fake provider: no such user")
        return user.public()

    async def lookup_sub(self, sub: str, username: str = "") -> Identity:
        await self._call()
        self.lookups_by_username += bool(username)
        if username:  # as Cognito's AdminGetUser: the user of that name, if it still is `sub`
            found = self._find(username)
            if found is None or found.identity.sub != sub:
                raise UnknownUser("fake provider: no such user, or another one now")
            return found.public()
        for user in self._users.values():
            if user.identity.sub == sub:
                return user.public()
        raise UnknownUser("fake provider: no user with that sub")

    async def close(self) -> None:
        self.closed = True

    async def _call(self) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            # A fresh traceback each time: re-raising one instance would grow its traceback.
            raise self.fail_with.with_traceback(None)

    def _get(self, username: str) -> _User:
        user = self._find(username)
        if user is None:
            raise KeyError(username)
        return user

    def _find(self, username: str) -> _User | None:
        key = username.casefold()
        return self._users.get(self._aliases.get(key, key))
