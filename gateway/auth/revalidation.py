"""Host keys outlive passwords: re-check their owners with the identity provider now and then.

A stock Anki client keeps its host key forever, so without this a user disabled or deleted in
Cognito would keep syncing. The owner of a key is looked up by `sub` (never by a stored
username, which can change hands) when its last confirmation is older than
`auth.recheck_seconds`; `Admission` (admission.py) decides, on every proxied request, whether
that check runs in the background or the request waits for it.

The owner is read by the username recorded with the account (`lookup_sub(sub, username)`: one
AdminGetUser in Cognito, whose quota is four times ListUsers'), and the checks of all accounts
share a calls-per-second budget (`calls_per_second`, a token bucket: bucket.py), so a crowd of
accounts falling due at once (after a restart, say) is spread out instead of spending Cognito's
quota in a burst. A check over the budget is put off (`deferred` counts those): nothing changes,
the request is served, and the next request of that account tries again. One pool thus serves
about `calls_per_second * interval` accounts that are active within every interval.

A disabled, reset-required or deleted user is suspended: their key gets 403 from the next
request on, and cached logins stop working. A later successful password login lifts the
suspension (the user was re-enabled). When the provider is unavailable nothing changes — the
provider being down never logs anyone out — and the check is retried `retry_after_failure`
seconds later; `postponed` counts those, and each is logged at WARNING. A registry that cannot
be written changes nothing either (logged at WARNING; the next request tries again).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from gateway import metrics
from gateway.auth.bucket import TokenBucket
from gateway.errors import GatewayError
from gateway.identity.provider import IdentityProvider, UnknownUser
from gateway.registry import ACTIVE, SUSPENDED, Account, Registry, RegistryUnavailable

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
        retry_after_failure: float = RETRY_AFTER_FAILURE,
        calls_per_second: float = math.inf,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._registry = registry
        self.interval = interval
        self._on_suspend = on_suspend
        self._clock = clock
        self._retry_after_failure = min(retry_after_failure, interval)
        self._running: dict[str, asyncio.Task[None]] = {}
        #: Checks that could not reach the provider and were put off (for operators and tests).
        self.postponed = 0
        #: Accounts suspended because the provider no longer vouches for their owner.
        self.suspended = 0
        self._budget = (
            None if math.isinf(calls_per_second) else TokenBucket(calls_per_second, clock=monotonic)
        )
        #: Checks put off because the calls-per-second budget was spent.
        self.deferred = 0

    def age(self, account: Account) -> float:
        """Seconds since the provider last confirmed the account's owner."""
        return self._clock() - account.checked_at

    def due(self, account: Account) -> bool:
        return account.status == ACTIVE and self.age(account) >= self.interval

    def maybe_check(self, account: Account) -> None:
        """Start a background check of `account` if one is due and none is running."""
        if self.due(account):
            self._task(account)

    def check_soon(self, account: Account) -> None:
        """Start a background check of `account` now, due or not (unless one is running)."""
        if account.status == ACTIVE:
            self._task(account)

    async def wait_for_check(self, account: Account) -> None:
        """Run the check of `account` (or join the one running) and wait for it to finish."""
        # Shielded: a client that goes away must not cancel a check other requests wait for.
        await asyncio.shield(self._task(account))

    def _task(self, account: Account) -> asyncio.Future[None]:
        task = self._running.get(account.sub)
        if task is None:
            loop = asyncio.get_running_loop()
            if self._budget is not None and not self._budget.take():
                self.deferred += 1
                metrics.recheck_deferred()
                skipped: asyncio.Future[None] = loop.create_future()
                skipped.set_result(None)
                return skipped
            task = loop.create_task(self.check(account))
            self._running[account.sub] = task
            task.add_done_callback(lambda _: self._running.pop(account.sub, None))
        return task

    async def check(self, account: Account) -> None:
        """Look the owner up and record the outcome; never raises for the provider's or the
        registry's trouble (the check is postponed, nothing changes)."""
        try:
            await self._check(account)
        except RegistryUnavailable as exc:
            log.warning(
                "revalidation postponed: registry unavailable",
                extra={"account": account.name, "reason": exc.detail},
            )

    async def _check(self, account: Account) -> None:
        try:
            identity = await self._provider.lookup_sub(account.sub, account.cognito_username)
        except UnknownUser:
            await self._suspend(account, "deleted in the identity provider")
            return
        except GatewayError as exc:
            self.postponed += 1
            metrics.recheck_postponed()
            log.warning(
                "revalidation postponed: identity provider unavailable",
                extra={
                    "account": account.name,
                    "reason": exc.detail,
                    "retry_in_s": self._retry_after_failure,
                },
            )
            await self._registry.mark_checked(
                account.sub, self._clock() - self.interval + self._retry_after_failure
            )
            return
        if identity.sub != account.sub:  # pragma: no cover - lookup_sub answers this sub only
            await self._suspend(account, "the provider answered for another identity")
        elif not identity.enabled:
            await self._suspend(account, "disabled in the identity provider")
        else:
            await self._registry.mark_checked(account.sub)

    async def _suspend(self, account: Account, why: str) -> None:
        self.suspended += 1
        log.warning("account suspended", extra={"account": account.name, "reason": why})
        # Only an active account: an operator may have disabled it while this check ran.
        if await self._registry.set_status(account.sub, SUSPENDED, only_from=ACTIVE):
            metrics.revocation("suspended")
            self._on_suspend(account.sub)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
