"""The login flow behind `POST sync/hostKey`.

    limiter → credential cache ─hit→ host key (no Cognito, no worker, no password check)
                               └miss→ single flight → provider.authenticate → registry.ensure
                                      → the account's worker logs the local account in → host key

Limiter and cache are keyed by the username's canonical spelling (identity/spelling.py), so every
spelling of one user shares one failure budget and one cache entry. A cached login is bounded
by `auth.cache_ttl_seconds` and dropped sooner when Cognito verifies another password for the
same `sub` or the same spelling for another `sub` (a changed password, a re-created user), or
when the account's key generation moves on ("sign out all devices").

The cache never answers on its own word. A user deleted in Cognito and re-created with the same
name and password (a new `sub`) must not be handed the deleted user's account, and nothing
tells the gateway of a deletion: it can happen at any moment after the entry was made. So a
hit stands only once Cognito, asked at that moment by `sub` (`lookup_sub`), still has that
`sub`, enabled, and known by the name typed (its username or verified email, canonical);
anything else drops the entry and the password goes to Cognito as on a miss. A hit thus saves
the password check (AdminInitiateAuth, and a count towards Cognito's lockout) and the worker
login, not the round trip; concurrent hits for one `sub` share one lookup. When Cognito cannot
be asked, the login gets 503 as an uncached one would.

An account `accounts prune --delete` has claimed (status DELETING, retention/prune.py) is never
used or revived: its login gets 503 with Retry-After (never 403) until the deletion is done, and
the login's own "seen" write (`Registry.touch`) is conditional on that status, so of a login and
the claim exactly one wins.

The user's password goes to the identity provider and nowhere else. The worker only ever sees
the local account name and its derived secret, so the key it issues is the key the client keeps.
That key is deterministic (the stock server's key is sha1("name:password")), which is why keys
survive gateway restarts: the registry stores their digests, the worker recomputes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp

from gateway import metrics, protocol
from gateway.auth.cache import CredentialCache, SingleFlight
from gateway.auth.limiter import FailureLimiter
from gateway.errors import (
    AuthFailed,
    BadRequest,
    GatewayError,
    Misconfigured,
    TooManyAttempts,
    Unavailable,
    WorkerFailed,
)
from gateway.identity.provider import (
    BadCredentials,
    ChallengeRequired,
    Identity,
    IdentityProvider,
    ImpossibleCredentials,
    UnknownUser,
)
from gateway.identity.spelling import canonical
from gateway.registry import ACTIVE, DELETING, SUSPENDED, Account, Registry
from gateway.workers.lock import make_account_dir
from gateway.workers.pool import WorkerPool

if TYPE_CHECKING:
    from gateway.backup.gate import BackupGate

log = logging.getLogger("gateway.login")
T = TypeVar("T")

#: Retry-After (seconds) of a login of an account `accounts prune` is deleting (503, never 403:
#: once the deletion is done, the next login makes a fresh account).
DELETING_RETRY_AFTER = 30


def _being_deleted() -> Unavailable:
    return Unavailable("the account is being deleted", retry_after=DELETING_RETRY_AFTER)


@dataclass(frozen=True)
class LoginResult:
    identity: Identity
    account: str
    host_key: str
    #: The account's key generation the key belongs to; a cached result of an older one is void.
    generation: int = 0


class LoginService:
    def __init__(
        self,
        *,
        provider: IdentityProvider,
        registry: Registry,
        pool: WorkerPool,
        upstream: aiohttp.ClientSession,
        password_for: Callable[[str, int], str],
        cache: CredentialCache[LoginResult],
        user_limiter: FailureLimiter,
        address_limiter: FailureLimiter,
    ) -> None:
        self.provider = provider
        self.registry = registry
        self.pool = pool
        self.cache = cache
        self._upstream = upstream
        self._password_for = password_for
        self._users = user_limiter
        self._addresses = address_limiter
        self._flights: SingleFlight[LoginResult] = SingleFlight()
        self._lookups: SingleFlight[Identity] = SingleFlight()
        #: Called with an account of another sub found under a name Cognito just vouched for
        #: (the app starts a re-check of its owner).
        self.on_rival: Callable[[Account], None] = lambda account: None
        #: With several nodes (gateway/cluster/): the host key from the owner node's worker for
        #: a `sub`, or None when this node owns the account.
        self.remote_key: Callable[[str, protocol.SyncHeader], Awaitable[str | None]] | None = None
        #: Set by the app: a worker login waits for a backup of its account like a sync
        #: request does (backup/gate.py), so it cannot restart the worker under the backup.
        self.gate: BackupGate | None = None

    async def login(
        self, username: str, password: str, address: str, header: protocol.SyncHeader
    ) -> LoginResult:
        """The host key for these credentials; raises the error tree (errors.py)."""
        try:
            result, cached = await self._login(username, password, address, header)
        except GatewayError as exc:
            metrics.login(_outcome(exc))
            raise
        metrics.login("cached" if cached else "ok")
        return result

    async def _login(
        self, username: str, password: str, address: str, header: protocol.SyncHeader
    ) -> tuple[LoginResult, bool]:
        user = canonical(username)
        self._check_limits(user, address)
        cache_key = self.cache.key(user, password)
        cached = self.cache.get(cache_key)
        if cached is not None:
            account = await self.registry.get(cached.identity.sub)
            if (
                account is not None
                and account.active
                and account.key_generation == cached.generation
                and await self._still_named(user, cached.identity.sub)
            ):
                log.info("login (cached)", extra={"account": account.name})
                return cached, True
            self.cache.forget_tags(_tags(cached.identity.sub, set()))
        # Identical concurrent logins share one flight, and count as one attempt.
        result = await self._flights.run(
            cache_key,
            lambda: self._counted(
                user,
                address,
                lambda: self._authenticate(username, password, header, cache_key),
            ),
        )
        return result, False

    async def _still_named(self, user: str, sub: str) -> bool:
        """Cognito's word, now, that `sub` exists, is enabled and is known as `user` (a
        canonical spelling). Raises the provider's Unavailable/Misconfigured."""
        try:
            identity = await self._lookups.run(sub, lambda: self.provider.lookup_sub(sub))
        except UnknownUser:
            log.info("cached login dropped: its sub is gone from the identity provider")
            return False
        if identity.sub != sub or not identity.enabled:
            return False
        names = {canonical(identity.username), canonical(identity.email or "")}
        if user not in names:
            log.info("cached login dropped: the name typed is no longer the sub's")
            return False
        await self.registry.mark_checked(sub)
        return True

    async def verify(self, username: str, password: str, address: str) -> Account:
        """A password check without a host key (the account portal's sign-in and its "password
        again" before deletion): the same limiter, Cognito call and account rules as `login`,
        never answered from the cache. Returns the (created if new) account; raises as `login`.
        """
        user = canonical(username)
        self._check_limits(user, address)
        _, account, _ = await self._counted(
            user,
            address,
            lambda: self._vouched(username, password, self.cache.key(user, password)),
        )
        return account

    async def _counted(
        self,
        user: str,
        address: str,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        """Run one attempt against the provider, counted as a failure *before* it starts, so a
        burst of concurrent guesses cannot all slip past the limit while the first ones are
        still in flight. The count is taken back when the attempt is not the client's failure
        (success, provider unavailable). A success does not clear earlier failures: they age
        out of the window, since a look-alike account (another Cognito user with the same
        canonical spelling) could otherwise clear its victim's budget at will. Credentials the
        provider refused without a call (ImpossibleCredentials) stay charged to the address but
        not to the user: they say nothing about that user's password."""
        marks = (self._users.record_failure(user), self._addresses.record_failure(address))
        try:
            result = await call()
        except ImpossibleCredentials:
            self._users.forgive(user, marks[0])
            raise
        except AuthFailed:
            raise
        except BaseException:
            self._users.forgive(user, marks[0])
            self._addresses.forgive(address, marks[1])
            raise
        self._addresses.forgive(address, marks[1])
        self._users.forgive(user, marks[0])
        return result

    def _check_limits(self, user: str, address: str) -> None:
        for limiter, key, what in (
            (self._users, user, "user"),
            (self._addresses, address, "address"),
        ):
            wait = limiter.retry_after(key)
            if wait is not None:
                log.warning("login refused: too many failures", extra={"limited": what})
                raise TooManyAttempts(retry_after=wait)

    async def _authenticate(
        self,
        username: str,
        password: str,
        header: protocol.SyncHeader,
        cache_key: tuple[str, bytes],
    ) -> LoginResult:
        identity, account, created = await self._vouched(username, password, cache_key)
        host_key = None
        if self.remote_key is not None:
            host_key = await self.remote_key(account.sub, header)
        if host_key is None:
            host_key = await self.worker_key(account, header)
        await self.registry.add_host_key(identity.sub, host_key, account.key_generation)
        now = await self.registry.get(identity.sub)
        if now is None:
            # Deleted while this login ran (after its folder was made): no key for it.
            raise Unavailable("the account was deleted during this login", retry_after=5)
        if now.key_generation != account.key_generation:
            # Signed out everywhere while this login ran: that key is already refused. Answer
            # with a retry rather than a key that logs the device out at its first request.
            raise Unavailable("account signed out during the login; try again", retry_after=1)
        if not await self.registry.touch(identity.sub):
            # Claimed by a prune (or deleted) since this login read it: the prune won.
            raise _being_deleted()
        result = LoginResult(identity, account.name, host_key, account.key_generation)
        self.cache.put(cache_key, result, _tags(identity.sub, _names(cache_key, identity)))
        log.info("login", extra={"account": account.name, "sub": identity.sub, "new": created})
        return result

    async def _vouched(
        self, username: str, password: str, cache_key: tuple[str, bytes]
    ) -> tuple[Identity, Account, bool]:
        """Cognito's word on the password, and the account it maps to (must be usable)."""
        identity = await self.provider.authenticate(username, password)
        # Cognito vouched for this password of this sub now. Stale: any other remembered
        # password of the sub (changed since), and anything remembered under one of its names
        # for another sub (a user deleted and re-created, signing in by username or email).
        names = _names(cache_key, identity)
        self.cache.forget_tags(_tags(identity.sub, names), keep=cache_key)
        for rival in await self.registry.others_named(identity.sub, names):
            # Another account under this user's names: its owner may be gone from Cognito.
            self.on_rival(rival)
        account, created = await self.registry.ensure(identity)
        if account.status == DELETING:
            log.info("login put off: account being deleted", extra={"account": account.name})
            raise _being_deleted()
        if account.status == SUSPENDED:
            # Cognito accepted the password again: the user was re-enabled there.
            if await self.registry.set_status(identity.sub, ACTIVE, only_from=SUSPENDED):
                log.info("suspension lifted by a successful login", extra={"account": account.name})
            account = await self.registry.get(identity.sub) or account
        elif not account.active:
            log.info("login refused: account disabled", extra={"account": account.name})
            raise BadCredentials("account disabled in the gateway")
        return identity, account, created

    async def sign_out(self, sub: str) -> int:
        """Sign every device of `sub` out: new key generation, cached logins and the running
        worker dropped, every account-portal session ended (the portal epoch moves on).
        Returns the new generation; KeyError for an unknown `sub`."""
        generation = await self.registry.sign_out(sub)
        await self.registry.end_portal_sessions(sub)
        metrics.revocation("signed_out")
        self.forget_account(sub)
        account = await self.registry.get(sub)
        if account is not None:
            self.pool.retire(account.name, "signed out everywhere")
        log.info("signed out everywhere", extra={"sub": sub, "generation": generation})
        return generation

    async def worker_key(self, account: Account, header: protocol.SyncHeader) -> str:
        """The host key from this gateway's worker for `account` (started if need be)."""
        try:
            return await self._worker_login(account, header)
        except _WorkerRefused:
            # The worker was started before the account's key generation moved on (a sign-out,
            # maybe from another process): it holds the old password. A fresh one reads the new.
            self.pool.retire(account.name, "its account's key generation changed")
            try:
                return await self._worker_login(account, header)
            except _WorkerRefused:
                # Another gateway process runs the old worker; its reaper retires it within
                # MAX_REAP_PERIOD. Meanwhile: try again shortly, never a 403.
                raise Unavailable(
                    "the account's worker still has its old key generation", retry_after=10
                ) from None

    async def _make_folder(self, account: Account) -> None:
        """The account's folder, made; then its registry row read again. An account deleted
        meanwhile (`accounts prune`, "delete my account": they delete the row, then look for
        the folder; this makes the folder, then looks for the row, so one of the two sees the
        other) gets its folder removed again if it is still empty, and the login a 503: no
        folder, worker or key is left for an account without a row. An account a prune has
        claimed (DELETING, before its row goes) is treated the same."""
        folder = make_account_dir(self.pool.collections_dir, account.name)
        now = await self.registry.get(account.sub)
        if now is None or now.status == DELETING:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only ever an empty one: never anyone's files
            raise Unavailable("the account was deleted during this login", retry_after=5)

    async def _worker_login(self, account: Account, header: protocol.SyncHeader) -> str:
        password = self._password_for(account.name, account.key_generation)
        body = protocol.encode_login(account.name, password)
        headers = {
            protocol.SYNC_HEADER: header.for_upstream(""),
            "Content-Type": "application/octet-stream",
        }
        # A login is where an account comes into being on its owner node (workers/lock.py).
        await self._make_folder(account)
        passage = (
            self.gate.passage(account.name, "sync/hostKey", header.session)
            if self.gate is not None
            else contextlib.nullcontext()
        )
        async with passage, self.pool.lease(account.name) as worker:
            try:
                async with self._upstream.post(
                    worker.base_url + "sync/hostKey", data=body, headers=headers
                ) as answer:
                    payload = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                await self.pool.report_broken(account.name)
                raise WorkerFailed(f"worker login failed: {type(exc).__name__}") from exc
        if status == 403:
            raise _WorkerRefused()
        if status != 200:
            raise WorkerFailed(f"worker refused the account login with {status}")
        try:
            return protocol.decode_login_answer(payload)
        except BadRequest as exc:
            raise WorkerFailed("worker answered hostKey with an unexpected body") from exc

    def forget_user(self, username: str) -> None:
        """Drop every cached login of `username`, any spelling (its password was reset)."""
        self.cache.forget_tags(_tags(None, {canonical(username)}))

    def forget_account(self, sub: str) -> None:
        self.cache.forget_tags(_tags(sub, set()))


def _names(cache_key: tuple[str, bytes], identity: Identity) -> set[str]:
    """The canonical names a login is known by: as typed, the username, the verified email."""
    names = (cache_key[0], canonical(identity.username), canonical(identity.email or ""))
    return {n for n in names if n}


def _tags(sub: str | None, names: set[str]) -> list[str]:
    """Cache tags of a login: its sub and every canonical name it is known by."""
    return ([f"sub:{sub}"] if sub else []) + [f"name:{n}" for n in sorted(names)]


def _outcome(error: GatewayError) -> str:
    """The metrics label of a failed login (metrics.py)."""
    if isinstance(error, ChallengeRequired):
        return "challenge"
    for kind, outcome in (
        (AuthFailed, "bad_credentials"),
        (TooManyAttempts, "limited"),
        (BadRequest, "bad_request"),
        (WorkerFailed, "worker_failed"),
        (Misconfigured, "misconfigured"),
        (Unavailable, "unavailable"),
    ):
        if isinstance(error, kind):
            return outcome
    return "error"


class _WorkerRefused(WorkerFailed):
    """The worker refused the account's derived password. Never a 403 to the client: the
    user's credentials were fine, ours were not (an older key generation, or the gateway secret
    changed under a running worker)."""

    def __init__(self) -> None:
        super().__init__("worker refused the account login with 403")
