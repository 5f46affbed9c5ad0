"""Local mode's portal directory: moto behind the real Cognito calls, plus what moto lacks.

moto (docs/cognito.md) sends no email, accepts any confirmation code, has no
ResendConfirmationCode, and leaves `email_verified` unset after a sign-up is confirmed, where
Cognito sets it. This wrapper marks the email verified on confirmation (as Cognito does) and
checks the codes itself: a sign-up, a resend and a reset request for an existing user issue a
random single-use code (gateway/portal/codes.py) that is printed on local mode's console (stdout,
the terminal that runs it; never a log record), and confirm/reset refuse any other code. So
local mode on a network address (`dev --host 0.0.0.0`) does not let a neighbour confirm or reset
anyone's account. Used only when `cognito.local_stand_in` is on. With local mode's PoolKeeper
(`keeper`), a call that finds the pool gone (the stand-in restarted) re-creates it as a login
does, so a sign-up right after a restart works.

With local mode's `PoolKeeper.users` (gateway/local/users.py), sign-ups, confirmations, password
resets and deletions are also written to `local-users.json`, and each sign-up is made under a
fresh seed of moto's generator, so the person comes back with the same `sub` (and account)
after the stand-in or local mode restarts, like a `dev add-user` user.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from typing import Any

from gateway.config import CognitoConfig
from gateway.identity.provider import UnknownUser
from gateway.local import standin
from gateway.local.keeper import PoolKeeper
from gateway.local.users import PortalUsers
from gateway.portal.codes import CodeBook
from gateway.portal.directory import AlreadyConfirmed, CognitoDirectory, _Refused

NOTICE = "Local mode: no email is sent. The code is printed in the terminal that runs the gateway."
CONFIRM, RESET = "confirm", "reset"


def print_code(purpose: str, email: str, code: str) -> None:
    """Local mode's console is where its operator reads the codes (the box is printed there)."""
    what = "sign-up confirmation" if purpose == CONFIRM else "password reset"
    print(f">>> Local mode {what} code for {email}: {code}", file=sys.stdout, flush=True)


class StandInDirectory(CognitoDirectory):
    def __init__(
        self,
        config: CognitoConfig,
        *,
        keeper: PoolKeeper | None = None,
        codes: CodeBook | None = None,
        announce: Callable[[str, str, str], None] = print_code,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self._keeper = keeper
        self._codes = CodeBook() if codes is None else codes
        self._announce = announce
        self._users: PortalUsers | None = None if keeper is None else keeper.users

    async def _run(self, operation: str, hide: tuple[str, ...] = (), **params: Any) -> Any:
        call = functools.partial(CognitoDirectory._run, self, operation, hide, **params)
        return await (call() if self._keeper is None else self._keeper.kept(call))

    async def sign_up(self, email: str, password: str) -> None:
        if await self._exists(email):
            return  # taken: Cognito's neutral answer, and no code
        await self._sign_up(email, password)
        if await self._exists(email):
            self._send(CONFIRM, email)

    async def _sign_up(self, email: str, password: str) -> None:
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
        # As Cognito: an unknown email gets the neutral answer and a confirmed one "already
        # confirmed", whatever the code; otherwise only the code issued last confirms.
        status = await self._status(email)
        if status is None:
            return
        if status == "UNCONFIRMED":
            self._codes.check(CONFIRM, email, code)  # moto would take any code
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
        if await self._exists(email):
            self._send(CONFIRM, email)

    async def forgot(self, email: str) -> None:
        await super().forgot(email)
        if await self._exists(email):
            self._send(RESET, email)

    async def reset(self, email: str, code: str, new_password: str) -> None:
        self._codes.check(RESET, email, code)  # moto would take any code
        await super().reset(email, code, new_password)
        await self._record(lambda users: users.password_set(email, new_password))

    async def remove(self, username: str, action: str) -> None:
        await super().remove(username, action)
        await self._record(lambda users: users.removed(username, action))

    def _send(self, purpose: str, email: str) -> None:
        self._announce(purpose, email, self._codes.issue(purpose, email))

    async def _exists(self, email: str) -> bool:
        return await self._status(email) is not None

    async def _status(self, email: str) -> str | None:
        """The user's UserStatus (AdminGetUser); None: no such user."""
        try:
            user = await self._run(
                "admin_get_user", UserPoolId=self._config.user_pool_id, Username=email
            )
        except _Refused:
            return None
        return str(user.get("UserStatus", ""))

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
