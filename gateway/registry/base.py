"""The registry's boundary: what the gateway asks of any account store, and the shapes it answers.

    Account                  one row: identity `sub` → local account `name` (permanent), status,
                             key generation, portal epoch, times (Unix seconds, float)
    ACTIVE DISABLED SUSPENDED DELETING
    key_digest(host_key)     SHA-256 hex: the only form a host key is ever stored in
    RegistryUnavailable      the store cannot answer now (503, never 403: a 403 logs Anki out)
    AccountBeingDeleted      a key of an account a prune has claimed (503 until it is gone)
    Registry                 the interface; every I/O method is `async`

Implementations: `sqlite.SqliteRegistry` (one host, the default) and `dynamo.DynamoRegistry`
(DynamoDB, many nodes). Both keep the same guarantees, pinned by tests/test_registry.py run
against each: one account per `sub`, unique names (`naming.candidates`), race-safe creation,
key lookup by digest, a key counts only while its account is active and its generation is the
account's (`sign_out`), `set_status(only_from=...)` as a compare-and-set, `claim_for_deletion`
and the "seen" writes (`touch`, `seen`, `mark_checked`, `ensure`'s refresh) as conditional
writes of which exactly one wins: never a "seen" on an account in DELETING, never a claim on
one seen since the cutoff.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway import naming
from gateway.errors import Unavailable
from gateway.identity.provider import Identity

#: The `Account` fields `Registry.set_quota` writes.
QUOTA_FIELDS = (
    "quota_collection_upload_megs",
    "quota_collection_megs",
    "quota_media_megs",
    "quota_media_file_megs",
)

#: "Last sync" (`last_seen`) is written at most this often per account, in seconds.
SEEN_EVERY = 60.0

ACTIVE = "active"
#: Disabled by the operator (`python -m gateway accounts disable`); only the operator undoes it.
DISABLED = "disabled"
#: The identity provider reported the user disabled or gone; a later successful login undoes it.
SUSPENDED = "suspended"
#: Claimed by `accounts prune --delete` (`claim_for_deletion`): no login revives or uses it (503
#: until the deletion is done); the next prune run finishes one an interrupted run left.
DELETING = "deleting"
STATUSES = (ACTIVE, DISABLED, SUSPENDED, DELETING)


@dataclass(frozen=True)
class Account:
    sub: str
    name: str
    cognito_username: str
    email: str | None
    status: str
    created_at: float
    last_seen: float
    checked_at: float = 0.0
    key_generation: int = 0
    #: Portal sessions signed in under an older epoch are void (portal sign-out, password
    #: reset, sign out all devices).
    portal_epoch: int = 0
    #: The operator's storage limits for this account, in MB (quota/limits.py `Override`):
    #: None = the configured default, 0 = unlimited.
    quota_collection_upload_megs: int | None = None
    quota_collection_megs: int | None = None
    quota_media_megs: int | None = None
    quota_media_file_megs: int | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


@dataclass(frozen=True)
class IssuedKey:
    """A host key as the registry keeps it: its digest (`key_digest`), never the key; the
    `generation` it was issued under; `created_at` in Unix seconds."""

    digest: str
    sub: str
    generation: int
    created_at: float


@dataclass(frozen=True)
class RetiredName:
    """The name of a deleted account, never given out again (`Registry.delete`)."""

    name: str
    sub: str
    retired_at: float


@dataclass(frozen=True)
class Contents:
    """Everything a registry holds, for copying it into another (registry/transfer.py)."""

    accounts: list[Account]
    retired: list[RetiredName]
    keys: list[IssuedKey]


def key_digest(host_key: str) -> str:
    """The stored form of a host key: SHA-256, 64 lowercase hex digits."""
    return hashlib.sha256(host_key.encode("utf-8")).hexdigest()


def key_admits(account: Account | None, generation: int, name: str | None) -> bool:
    """Whether a key issued under `generation` to the account named `name` (None: not known)
    still opens `account`: it is active, of that generation, and the same account, not a new
    one the same `sub` got after a deletion (generations start at 0 again; names never do)."""
    return (
        account is not None
        and account.active
        and account.key_generation == generation
        and (name is None or account.name == name)
    )


def key_waits(account: Account | None, generation: int, name: str | None) -> bool:
    """Whether a key would open `account` (as `key_admits`) but for the account being claimed
    by a prune (DELETING): its requests wait (`AccountBeingDeleted`, 503), as its logins do; a
    released claim lets them through again, a finished deletion refuses them."""
    return (
        account is not None
        and account.status == DELETING
        and account.key_generation == generation
        and (name is None or account.name == name)
    )


def quota_values(megs: Mapping[str, int | None]) -> dict[str, int | None]:
    """`megs` checked for `Registry.set_quota`."""
    for name, value in megs.items():
        if name not in QUOTA_FIELDS:
            raise ValueError(f"not a quota field: {name!r}")
        whole = isinstance(value, int) and not isinstance(value, bool)
        if value is not None and (not whole or value < 0):
            raise ValueError(f"{name} must be a whole number of MB >= 0, or None")
    return dict(megs)


class RegistryUnavailable(Unavailable):
    """The registry's store cannot answer now (unreachable, throttled, timed out).

    Answered 503 on every route (errors.py): the user's credentials are not in question."""

    public = "service temporarily unavailable"


class AccountBeingDeleted(RegistryUnavailable):
    """A host key of an account `accounts prune` has claimed (DELETING): 503, never 403, until
    the deletion is done (its keys are then unknown: 403) or the claim released."""

    public = "account being deleted, try again later"
    retry_after = 30


class Registry(abc.ABC):
    """Identity `sub` → account, host key digest → account. Every I/O method is a coroutine and
    may raise `RegistryUnavailable`; none blocks the event loop for longer than a local index
    lookup."""

    def __init__(self, collections_dir: Path) -> None:
        self._collections = collections_dir

    def folder(self, account: Account) -> Path:
        """`<collections>/<name>`, resolved; pure (the folder need not exist). Raises ValueError
        if the name would leave the collections folder (defence in depth: names are checked at
        creation, and checked again on the way out)."""
        path = (self._collections / account.name).resolve()
        if path.parent != self._collections.resolve() or not naming.is_safe(account.name):
            raise ValueError(f"account folder escapes the collections folder: {account.name!r}")
        return path

    # -- accounts -----------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, sub: str) -> Account | None: ...

    @abc.abstractmethod
    async def get_by_name(self, name: str) -> Account | None: ...

    @abc.abstractmethod
    async def count_by_status(self) -> dict[str, int]:
        """{status: accounts} (for metrics)."""

    @abc.abstractmethod
    async def count(self) -> int: ...

    @abc.abstractmethod
    async def all(self) -> list[Account]:
        """Every account, ordered by name."""

    @abc.abstractmethod
    async def ensure(self, identity: Identity, *, refresh: bool = True) -> tuple[Account, bool]:
        """The account for `identity`, created if new. Returns (account, created).

        One account per `sub`, also when several tasks or processes ask at once; a new account
        gets the first free name of `naming.candidates(naming.base_name(...))`. With `refresh`
        (a login: the provider just vouched for this identity), also stores the username and
        verified email the provider reports now; without it (provisioning) an existing account
        is never changed."""

    @abc.abstractmethod
    async def others_named(self, sub: str, names: set[str]) -> list[Account]:
        """Active accounts of other subs whose stored username or email is one of `names`
        (canonical spellings, identity/spelling.py)."""

    @abc.abstractmethod
    async def set_status(self, sub: str, status: str, *, only_from: str | None = None) -> bool:
        """Set the account's status; with `only_from`, only if it is that now (so a re-check
        in flight cannot turn an operator's `disabled` into a `suspended` a login lifts).
        Returns whether the account changed."""

    @abc.abstractmethod
    async def touch(self, sub: str) -> bool:
        """Seen now, and confirmed by the identity provider now. Returns whether it was written:
        False when the account is gone or in DELETING (claimed by a prune: it is not revived)."""

    @abc.abstractmethod
    async def claim_for_deletion(self, sub: str, unseen_since: float) -> Account | None:
        """Set the account's status to DELETING in one conditional write, only if it is not in
        DELETING already and its creation, last sync and last check (`created_at`, `last_seen`,
        `checked_at`) are all before `unseen_since` (Unix seconds). Returns the claimed account
        (status DELETING), or None (gone, claimed already, or seen meanwhile: a login's `touch`
        and this claim exclude each other)."""

    @abc.abstractmethod
    async def end_portal_sessions(self, sub: str) -> None:
        """Void every portal session of the account (they carry the epoch they began in)."""

    @abc.abstractmethod
    async def seen(self, account: Account) -> None:
        """A sync request arrived now (for "last sync"; not a confirmation by the provider).
        Written at most every `SEEN_EVERY` seconds per account, never on one in DELETING."""

    @abc.abstractmethod
    async def mark_checked(self, sub: str, when: float | None = None) -> None:
        """Confirmed by the identity provider at `when` (Unix seconds; default now); not
        written on an account in DELETING."""

    @abc.abstractmethod
    async def sign_out(self, sub: str) -> int:
        """Move the account's key generation on and forget its keys; returns the new
        generation. Every key issued so far is refused from now on. Raises KeyError for an
        unknown `sub`."""

    @abc.abstractmethod
    async def delete(self, sub: str) -> Account | None:
        """Remove the account and its keys (refused from now on); returns the removed account,
        or None. The folder is the caller's to remove once its worker stopped. The name is
        retired, never given to another account (nor to this `sub` again): a worker's password,
        so the host key the stock server answers, derives from the name and key generation, and
        a new account under the same name would get the key the deleted one's devices hold."""

    @abc.abstractmethod
    async def set_quota(self, sub: str, megs: Mapping[str, int | None]) -> bool:
        """Set the account's storage limits: `megs` maps some of `QUOTA_FIELDS` to MB (None:
        the configured default, 0: unlimited); fields not named keep their value. Returns
        whether the account exists. ValueError for another key or a negative value."""

    # -- host keys ----------------------------------------------------------------------

    @abc.abstractmethod
    async def add_host_key(self, sub: str, host_key: str, generation: int = 0) -> None:
        """Record `host_key` (stored as its digest) as issued to `sub` under `generation`."""

    @abc.abstractmethod
    async def account_for_key(self, host_key: str) -> Account | None:
        """The active account a host key belongs to, or None (unknown or revoked key: its
        account is not active, or signed out since the key was issued). Raises
        `AccountBeingDeleted` for a key of an account a prune has claimed (`key_waits`)."""

    @abc.abstractmethod
    def knows_key(self, host_key: str) -> bool:
        """Whether `host_key` was issued or answered here lately (in memory: no I/O). A key
        known here may still be refused by `account_for_key` (revoked since)."""

    @abc.abstractmethod
    async def host_key_count(self, sub: str) -> int: ...

    # -- signed requests ----------------------------------------------------------------

    @abc.abstractmethod
    async def spend_nonce(self, nonce: str, until: float) -> bool:
        """Remember `nonce` (a verified signature's digest) until Unix time `until`: True the
        first time, False while it is remembered (a replay). Every process and node on this
        registry, and a restart, sees it. Callers pass only signatures already verified, so
        what is kept is bounded by what the holders of the secret sign; expired ones are
        dropped as new ones come."""

    # -- operations ---------------------------------------------------------------------

    @abc.abstractmethod
    async def writable(self) -> bool:
        """Whether a write could be made now (readiness); never raises."""

    @abc.abstractmethod
    async def close(self) -> None: ...
