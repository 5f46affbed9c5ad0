"""Deleting an account and its data: one ordered path for the portal's "delete my account" and
the operator's `accounts prune`.

    await delete_account(account, steps) -> bool     False: nothing deleted (Cognito not told)

Order, so no login can re-create the account half-way and no half-deleted account serves a key:
1. `steps.forget(sub)`: this process's cached logins of the account are dropped;
2. `steps.remove_user(cognito_username)`: the Cognito user deleted, disabled or kept
   (`portal.delete_cognito_user`); when Cognito cannot be told (GatewayError) nothing else
   happens and the answer is False;
3. the registry row and its key digests deleted: every key is refused from here on (403);
4. `steps.forget(sub)` again (a login that raced step 3), then `steps.erase(account)`: the
   account's sync server stopped and its folder removed. The portal and the prune command both
   use the backup's handshake (backup/erase.py): it stops the server in whichever gateway
   process runs it, and the folder is removed under the account's worker lock, so no server
   runs in it or starts in it meanwhile; the portal also asks the owner node when there are
   several (cluster/erase.py).
Metrics: revocation("deleted").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import metrics
from gateway.errors import GatewayError
from gateway.registry import Account, Registry

log = logging.getLogger("gateway.deletion")


@dataclass(frozen=True)
class Steps:
    registry: Registry
    remove_user: Callable[[str], Awaitable[None]]
    erase: Callable[[Account], Awaitable[None]]
    forget: Callable[[str], None] = lambda sub: None


async def delete_account(account: Account, steps: Steps) -> bool:
    steps.forget(account.sub)
    try:
        await steps.remove_user(account.cognito_username)
    except GatewayError as exc:
        log.warning(
            "deletion put off: Cognito could not be told",
            extra={"account": account.name, "reason": exc.detail},
        )
        return False
    await steps.registry.delete(account.sub)
    metrics.revocation("deleted")
    steps.forget(account.sub)
    await steps.erase(account)
    log.info("account deleted", extra={"account": account.name, "sub": account.sub})
    return True
