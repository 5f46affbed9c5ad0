"""Admission: may this host key reach its account's worker? One call per proxied request.

    admit(host_key, address) -> Account
        raises AuthFailed (403)  unknown key, a key from before "sign out everywhere"
                                 (an old key generation), an account disabled by the operator
                                 or suspended after the identity provider stopped vouching
               TooManyAttempts (429)  the client `address` sent too many unknown keys lately
                                 (`unknown_keys`: a FailureLimiter) and this key is not one
                                 the registry knows already; no lookup is made for it

Every unknown key costs the registry a read (with DynamoDB a GetItem, paid per request): an
address spraying made-up keys is held back like one guessing passwords, counted before the
lookup (a concurrent burst gets no more than the limit through), and keys already known here
(`Registry.knows_key`) keep working from that address meanwhile.

Revocation holds for every method a key is used with (`sync/*` and `msync/*` alike), not only
for the `sync/meta` a stock client starts with: a hostile client may skip straight to
`sync/download`. When the owner's last confirmation is older than `auth.recheck_seconds`, a
check starts in the background and this request goes on; later requests see its outcome, so a
client sending requests keeps access for at most `recheck_seconds` plus one provider round
trip after a change in Cognito. When it is overdue (older than `OVERDUE_FACTOR` intervals: the
client was away), the request waits for the check, so a returning client cannot slip one
request through. A check that cannot reach the provider changes nothing: the request is served.
"""

from __future__ import annotations

from gateway.auth.limiter import FailureLimiter
from gateway.auth.revalidation import Revalidator
from gateway.errors import AuthFailed, TooManyAttempts
from gateway.registry import Account, Registry

#: A check older than this many re-check intervals makes the request wait for a fresh one.
OVERDUE_FACTOR = 2.0


class Admission:
    def __init__(
        self,
        registry: Registry,
        revalidator: Revalidator | None = None,
        unknown_keys: FailureLimiter | None = None,
    ) -> None:
        self._registry = registry
        self._revalidator = revalidator
        self._unknown_keys = unknown_keys

    async def admit(self, host_key: str, address: str = "") -> Account:
        if not host_key:
            raise AuthFailed("no host key")
        account = await self._lookup(host_key, address)
        if account is None:
            raise AuthFailed("unknown or revoked host key")
        await self._registry.seen(account)
        checks = self._revalidator
        if checks is None or not checks.due(account):
            return account
        if checks.age(account) < OVERDUE_FACTOR * checks.interval:
            checks.maybe_check(account)
            return account
        await checks.wait_for_check(account)
        fresh = await self._registry.get(account.sub)
        if fresh is None or not fresh.active:
            raise AuthFailed("host key revoked: the identity provider no longer vouches")
        return fresh

    async def _lookup(self, host_key: str, address: str) -> Account | None:
        limiter = self._unknown_keys
        if limiter is None or self._registry.knows_key(host_key):
            return await self._registry.account_for_key(host_key)
        wait = limiter.retry_after(address)
        if wait is not None:
            raise TooManyAttempts("too many unknown host keys from this address", retry_after=wait)
        mark = limiter.record_failure(address)
        try:
            account = await self._registry.account_for_key(host_key)
        except BaseException:
            limiter.forgive(address, mark)  # the registry's trouble, not the client's
            raise
        if account is not None:
            limiter.forgive(address, mark)
        return account
