"""The login flow behind `POST sync/hostKey`.

    limiter → credential cache ─hit→ host key (no Cognito, no worker, no password check)
                               └miss→ single flight → provider.authenticate → registry.ensure
                                      → the account's worker logs the local account in → host key

The user's password goes to the identity provider and nowhere else. The worker only ever sees
the local account name and its derived secret, so the key it issues is the key the client keeps.
That key is deterministic (the stock server's key is sha1("name:password")), which is why keys
survive gateway restarts: the registry stores their digests, the worker recomputes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from gateway import protocol
from gateway.auth.cache import CredentialCache, SingleFlight
from gateway.auth.identity import BadCredentials, Identity, IdentityProvider
from gateway.auth.limiter import FailureLimiter
from gateway.errors import AuthFailed, BadRequest, TooManyAttempts, WorkerFailed
from gateway.registry import ACTIVE, SUSPENDED, Account, Registry
from gateway.workers.pool import WorkerPool

log = logging.getLogger("gateway.login")


@dataclass(frozen=True)
class LoginResult:
    identity: Identity
    account: str
    host_key: str


class LoginService:
    def __init__(
        self,
        *,
        provider: IdentityProvider,
        registry: Registry,
        pool: WorkerPool,
        upstream: aiohttp.ClientSession,
        secret_for: Callable[[str], str],
        cache: CredentialCache[LoginResult],
        user_limiter: FailureLimiter,
        address_limiter: FailureLimiter,
    ) -> None:
        self.provider = provider
        self.registry = registry
        self.pool = pool
        self.cache = cache
        self._upstream = upstream
        self._secret_for = secret_for
        self._users = user_limiter
        self._addresses = address_limiter
        self._flights: SingleFlight[LoginResult] = SingleFlight()

    async def login(
        self, username: str, password: str, address: str, header: protocol.SyncHeader
    ) -> LoginResult:
        for limiter, key, what in (
            (self._users, username, "user"),
            (self._addresses, address, "address"),
        ):
            wait = limiter.retry_after(key)
            if wait is not None:
                log.warning("login refused: too many failures", extra={"limited": what})
                raise TooManyAttempts(retry_after=wait)
        cache_key = self.cache.key(username, password)
        cached = self.cache.get(cache_key)
        if cached is not None:
            account = self.registry.get(cached.identity.sub)
            if account is not None and account.active:
                log.info("login (cached)", extra={"account": account.name})
                return cached
        try:
            result = await self._flights.run(
                cache_key, lambda: self._authenticate(username, password, header)
            )
        except AuthFailed:
            self._users.record_failure(username)
            self._addresses.record_failure(address)
            raise
        self._users.reset(username)
        return result

    async def _authenticate(
        self, username: str, password: str, header: protocol.SyncHeader
    ) -> LoginResult:
        identity = await self.provider.authenticate(username, password)
        account, created = self.registry.ensure(identity)
        if account.status == SUSPENDED:
            # Cognito accepted the password again: the user was re-enabled there.
            self.registry.set_status(identity.sub, ACTIVE)
            log.info("suspension lifted by a successful login", extra={"account": account.name})
        elif not account.active:
            log.info("login refused: account disabled", extra={"account": account.name})
            raise BadCredentials("account disabled in the gateway")
        host_key = await self._worker_login(account, header)
        self.registry.add_host_key(identity.sub, host_key)
        self.registry.touch(identity.sub)
        result = LoginResult(identity, account.name, host_key)
        self.cache.put(self.cache.key(username, password), result)
        log.info("login", extra={"account": account.name, "sub": identity.sub, "new": created})
        return result

    async def _worker_login(self, account: Account, header: protocol.SyncHeader) -> str:
        body = protocol.encode_login(account.name, self._secret_for(account.name))
        headers = {
            protocol.SYNC_HEADER: header.for_upstream(""),
            "Content-Type": "application/octet-stream",
        }
        async with self.pool.lease(account.name) as worker:
            try:
                async with self._upstream.post(
                    worker.base_url + "sync/hostKey", data=body, headers=headers
                ) as answer:
                    payload = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self.pool.report_broken(account.name)
                raise WorkerFailed(f"worker login failed: {type(exc).__name__}") from exc
        if status != 200:
            # Never a 403 to the client: the user's credentials were fine, ours were not
            # (e.g. the gateway secret changed under a running worker).
            raise WorkerFailed(f"worker refused the account login with {status}")
        try:
            return protocol.decode_login_answer(payload)
        except BadRequest as exc:
            raise WorkerFailed("worker answered hostKey with an unexpected body") from exc

    def forget_account(self, sub: str) -> None:
        self.cache.forget(lambda r: r.identity.sub == sub)
