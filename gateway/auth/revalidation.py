"""Host keys outlive passwords: re-check their owners with the identity provider now and then.

A stock Anki client keeps its host key forever, so without this a user disabled or deleted in
Cognito would keep syncing. At the start of each sync (`sync/meta`), an account whose last
confirmation is older than `auth.recheck_seconds` is looked up in the background — the sync
itself never waits for Cognito. A disabled, reset-required or deleted user is suspended: their
key gets 403 from the next request on, and cached logins stop working. A later successful
password login lifts the suspension (the user was re-enabled). When the provider is unavailable
nothing changes and the check is retried a minute later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.auth.identity import IdentityProvider, UnknownUser
from gateway.errors import GatewayError
from gateway.registry import ACTIVE, SUSPENDED, Account, Registry

log = logging.getLogger("gateway.revalidation")
RETRY_AFTER_FAILURE = 60.0


class Revalidator:
    def __init__(
        self,
        provider: IdentityProvider,
        registry: Registry,
        interval: float,
        *,
        on_suspend: Callable[[str], None] = lambda sub: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._registry = registry
        self._interval = interval
        self._on_suspend = on_suspend
        self._clock = clock
        self._running: dict[str, asyncio.Task[None]] = {}

    def due(self, account: Account) -> bool:
        return account.status == ACTIVE and self._clock() - account.checked_at >= self._interval

    def maybe_check(self, account: Account) -> None:
        """Start a background check of `account` if one is due and none is running."""
        if not self.due(account) or account.sub in self._running:
            return
        task = asyncio.get_running_loop().create_task(self.check(account))
        self._running[account.sub] = task
        task.add_done_callback(lambda _: self._running.pop(account.sub, None))

    async def check(self, account: Account) -> None:
        try:
            identity = await self._provider.lookup(account.cognito_username)
        except UnknownUser:
            self._suspend(account, "deleted in the identity provider")
            return
        except GatewayError as exc:
            log.warning(
                "revalidation postponed", extra={"account": account.name, "reason": exc.detail}
            )
            self._registry.mark_checked(
                account.sub, self._clock() - self._interval + RETRY_AFTER_FAILURE
            )
            return
        if identity.sub != account.sub:
            # The username now belongs to someone else: the old user is gone.
            self._suspend(account, "username now belongs to another identity")
        elif not identity.enabled:
            self._suspend(account, "disabled in the identity provider")
        else:
            self._registry.mark_checked(account.sub)

    def _suspend(self, account: Account, why: str) -> None:
        log.warning("account suspended", extra={"account": account.name, "reason": why})
        self._registry.set_status(account.sub, SUSPENDED)
        self._on_suspend(account.sub)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
