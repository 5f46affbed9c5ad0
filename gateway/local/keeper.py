"""Local mode's identity provider: re-creates the stand-in's pool when the stand-in forgot it.

    PoolKeeper(inner, recreate, expected, users=None)     an IdentityProvider around `inner`;
                                                          `users`: where the portal records
                                                          local mode's sign-ups (users.py);
                                                          one still waiting for its code
                                                          cannot sign in (BadCredentials),
                                                          as with Cognito (moto lets it)

moto keeps everything in memory. When the stand-in restarts (its container crashed and the
engine started it again), the pool, the app client and the users are gone, and every call
for the pool answers ResourceNotFoundException: without this, every new login would be a 500
until local mode is restarted by hand. So a call that fails that way runs `recreate()` (pool,
app client and the users of `local-users.json`, gateway/local/standin.py) in a thread, once for all
the calls failing at the same time, and is made once more. The stand-in seeds its generator
before creating the pool and client, so they come back with the ids in the gateway's
configuration (`expected`); if they do not, the log says to restart local mode. Users come back
with their own `sub`s (seeded too), so they find their accounts again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from gateway.identity.provider import (
    BadCredentials,
    Identity,
    IdentityProvider,
    ProviderMisconfigured,
)

if TYPE_CHECKING:
    from gateway.local.users import PortalUsers

log = logging.getLogger(__name__)
T = TypeVar("T")
FORGOTTEN = "ResourceNotFoundException"


class PoolKeeper:
    def __init__(
        self,
        inner: IdentityProvider,
        recreate: Callable[[], tuple[str, str]],
        expected: tuple[str, str],
        users: PortalUsers | None = None,
    ) -> None:
        self._inner = inner
        #: The portal's stand-in directory records sign-ups here (gateway/local/directory.py).
        self.users = users
        self._recreate = recreate
        self._expected = expected
        self._lock = asyncio.Lock()
        #: Moves on with every re-creation: a call that failed before it need not recreate.
        self._generation = 0
        self.recreations = 0

    async def authenticate(self, username: str, password: str) -> Identity:
        identity = await self.kept(lambda: self._inner.authenticate(username, password))
        # Cognito refuses an unconfirmed user's sign-in (UserNotConfirmedException: the user's
        # own fault, a 403, docs/cognito.md); moto signs it in. The portal's record says.
        users = self.users
        if users is not None and await asyncio.to_thread(users.waiting, identity.sub):
            raise BadCredentials("user not confirmed (as Cognito: UserNotConfirmedException)")
        return identity

    async def lookup(self, username: str) -> Identity:
        return await self.kept(lambda: self._inner.lookup(username))

    async def lookup_sub(self, sub: str, username: str = "") -> Identity:
        return await self.kept(lambda: self._inner.lookup_sub(sub, username))

    async def close(self) -> None:
        await self._inner.close()

    async def kept(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, made once more after a re-creation when it found the pool gone (the
        portal's calls come through here too, gateway/local/directory.py)."""
        generation = self._generation
        try:
            return await call()
        except ProviderMisconfigured as exc:
            if exc.code != FORGOTTEN:
                raise
        await self._recreate_once(generation)
        return await call()

    async def _recreate_once(self, failed_in: int) -> None:
        async with self._lock:
            if self._generation != failed_in:
                return  # another call re-created the pool meanwhile
            log.warning("the Cognito stand-in forgot its pool (restarted?); re-creating it")
            ids = await asyncio.to_thread(self._recreate)
            self._generation += 1
            self.recreations += 1
        if ids != self._expected:
            log.error(
                "the Cognito stand-in gave the pool another id (%s, expected %s): restart "
                "local mode",
                ids[0],
                self._expected[0],
            )
            raise ProviderMisconfigured("the Cognito stand-in's pool has a new id")
        log.warning("Cognito stand-in: pool, app client and local users re-created")
