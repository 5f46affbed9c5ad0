"""Local mode's portal directory: moto behind the real Cognito calls, plus what moto lacks.

moto (docs/cognito.md) sends no email, accepts any confirmation code, has no
ResendConfirmationCode, and leaves `email_verified` unset after a sign-up is confirmed, where
Cognito sets it. This wrapper marks the email verified on confirmation (as Cognito does) and
turns a resend into a no-op; the pages tell the person that any code works here. Used only
when `cognito.local_stand_in` is on. With local mode's PoolKeeper (`keeper`), a call that finds
the pool gone (the stand-in restarted) re-creates it as a login does, so a sign-up right after a
restart works.

With local mode's `PoolKeeper.users` (gateway/local/users.py), sign-ups, confirmations, password
resets and deletions are also written to `local-users.json`, and each sign-up is made under a
fresh seed of moto's generator, so the person comes back with the same `sub` (and account)
after the stand-in or local mode restarts, like a `dev add-user` user.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from gateway.config import CognitoConfig
from gateway.identity.provider import UnknownUser
from gateway.local import standin
from gateway.local.keeper import PoolKeeper
from gateway.local.users import PortalUsers
from gateway.portal.directory import AlreadyConfirmed, CognitoDirectory, _Refused

NOTICE = "Local mode: no email is sent, and any code of 6 digits confirms."


class StandInDirectory(CognitoDirectory):
    def __init__(
        self, config: CognitoConfig, *, keeper: PoolKeeper | None = None, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        self._keeper = keeper
        self._users: PortalUsers | None = None if keeper is None else keeper.users

    async def _run(self, operation: str, hide: tuple[str, ...] = (), **params: Any) -> Any:
        call = functools.partial(CognitoDirectory._run, self, operation, hide, **params)
        return await (call() if self._keeper is None else self._keeper.kept(call))

    async def sign_up(self, email: str, password: str) -> None:
        users = self._users
        if users is None:
            return await super().sign_up(email, password)
        for attempt in range(standin.SUB_ATTEMPTS):
            if await self._sub(email) is not None:
                break  # taken: Cognito's neutral answer, and nothing to record
            seed, seeded = await asyncio.to_thread(users.seed)
            await super().sign_up(email, password)
            sub = await self._sub(email)
            if sub is None:
                return  # refused without saying so: nothing was made
            last = attempt == standin.SUB_ATTEMPTS - 1 or not seeded
            if sub == standin.expected_sub(seed) or last:
                # After the last attempt the `sub` is kept as it is; the next re-creation says
                # that it could not be reproduced (gateway/local/standin.py).
                await asyncio.to_thread(users.signed_up, email, password, seed, sub)
                return
            # Another request drew from moto's generator in between: unconfirmed, nothing
            # depends on this user yet, so it is made again under a new seed.
            await self._run(
                "admin_delete_user", UserPoolId=self._config.user_pool_id, Username=email
            )
        await super().sign_up(email, password)

    async def confirm(self, email: str, code: str) -> None:
        try:
            await super().confirm(email, code)
        except AlreadyConfirmed:
            await self._record(lambda users: users.confirmed(email))
            raise
        try:
            await self._run(
                "admin_update_user_attributes",
                UserPoolId=self._config.user_pool_id,
                Username=email,
                UserAttributes=[{"Name": "email_verified", "Value": "true"}],
            )
        except _Refused:
            return  # no such user: the same neutral answer as a confirmation
        await self._record(lambda users: users.confirmed(email))

    async def resend(self, email: str) -> None:
        return None

    async def reset(self, email: str, code: str, new_password: str) -> None:
        await super().reset(email, code, new_password)
        await self._record(lambda users: users.password_set(email, new_password))

    async def remove(self, username: str, action: str) -> None:
        await super().remove(username, action)
        await self._record(lambda users: users.removed(username, action))

    async def _sub(self, email: str) -> str | None:
        """The user's `sub`, by the provider's own lookup (AdminGetUser); None: no such user."""
        assert self._keeper is not None  # only with local mode's users
        try:
            return (await self._keeper.lookup(email)).sub
        except UnknownUser:
            return None

    async def _record(self, change: Callable[[PortalUsers], None]) -> None:
        """`change(users)` in a thread (it locks and writes a file), in local mode only."""
        if self._users is not None:
            await asyncio.to_thread(change, self._users)
