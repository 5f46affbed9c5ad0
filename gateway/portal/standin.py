"""Local mode's portal directory: moto behind the real Cognito calls, plus what moto lacks.

moto (docs/cognito.md) sends no email, accepts any confirmation code, has no
ResendConfirmationCode, and leaves `email_verified` unset after a sign-up is confirmed, where
Cognito sets it. This wrapper marks the email verified on confirmation (as Cognito does) and
turns a resend into a no-op; the pages tell the person that any code works here. Used only
when `cognito.local_stand_in` is on. With local mode's PoolKeeper (`keeper`), a call that finds
the pool gone (the stand-in restarted) re-creates it as a login does, so a sign-up right after a
restart works.
"""

from __future__ import annotations

import functools
from typing import Any

from gateway.config import CognitoConfig
from gateway.localpool import PoolKeeper
from gateway.portal.directory import CognitoDirectory, _Refused

NOTICE = "Local mode: no email is sent, and any code of 6 digits confirms."


class StandInDirectory(CognitoDirectory):
    def __init__(
        self, config: CognitoConfig, *, keeper: PoolKeeper | None = None, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        self._keeper = keeper

    async def _run(self, operation: str, hide: tuple[str, ...] = (), **params: Any) -> Any:
        call = functools.partial(CognitoDirectory._run, self, operation, hide, **params)
        return await (call() if self._keeper is None else self._keeper.kept(call))

    async def confirm(self, email: str, code: str) -> None:
        await super().confirm(email, code)
        try:
            await self._run(
                "admin_update_user_attributes",
                UserPoolId=self._config.user_pool_id,
                Username=email,
                UserAttributes=[{"Name": "email_verified", "Value": "true"}],
            )
        except _Refused:
            return  # no such user: the same neutral answer as a confirmation

    async def resend(self, email: str) -> None:
        return None
