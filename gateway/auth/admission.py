"""Admission: may this host key reach its account's worker? One call per proxied request.

    admit(host_key) -> Account
        raises AuthFailed (403)  unknown key, a key from before "sign out everywhere"
                                 (an old key generation), an account disabled by the operator
                                 or suspended after the identity provider stopped vouching

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

from gateway.auth.revalidation import Revalidator
from gateway.errors import AuthFailed
from gateway.registry import Account, Registry

#: A check older than this many re-check intervals makes the request wait for a fresh one.
OVERDUE_FACTOR = 2.0


class Admission:
    def __init__(self, registry: Registry, revalidator: Revalidator | None = None) -> None:
        self._registry = registry
        self._revalidator = revalidator

    async def admit(self, host_key: str) -> Account:
        account = await self._registry.account_for_key(host_key) if host_key else None
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
