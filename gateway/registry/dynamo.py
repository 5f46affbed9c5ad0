"""The registry in one DynamoDB table, shared by every gateway node (`registry.backend: dynamodb`).

Table layout (one table, partition key `pk` String, no sort key; shared with the cluster code,
which owns the `node#` and `owner#` items; this module never writes, changes or returns those;
its scans read past them, filtered out by DynamoDB):

    account#<sub>     sub name cognito_username email status created_at last_seen checked_at
                      key_generation portal_epoch [quota_*_megs], and the index keys
                      username_key email_key
    name#<name>       sub [retired_at]   the claim on an account name (unique names); kept,
                                         retired, when the account is deleted (never reused)
    key#<sha256>      sub generation created_at key_sub name    one issued host key (its digest);
                                         it opens only the account `name` (not one the same
                                         sub gets after a deletion)

    nonce#<digest>    until expires      a verified signature, remembered until `until` (Unix
                                         seconds) against replays (`spend_nonce`); an expired
                                         one is overwritten, never read as live. `expires`
                                         (`until` rounded up, whole seconds) is the table's
                                         TTL attribute: DynamoDB deletes the item on its own
                                         some time after (usually within days), so nonces
                                         never accumulate
    index by-username  username_key → account items (all attributes)    others_named()
    index by-email     email_key → account items (all attributes)       others_named()
    index by-key-sub   key_sub → key items (keys only)                  sign_out(), delete()

Guarantees, as the SQLite registry's (tests/test_registry.py runs both):
- one account per `sub`, unique names: `ensure` writes `name#<name>` and `account#<sub>` in one
  transaction, each conditional on `attribute_not_exists(pk)` (what `BEGIN IMMEDIATE` and
  `mkdir` do for SQLite); a failed name condition moves on to the next `naming.candidates`
  name, a failed account condition means another node created the account first.
- account items are only ever changed with UpdateItem on named attributes (never a whole
  PutItem over an existing one), so attributes other code adds survive.
- a key counts only while its account is active and the key's generation is the account's.

`copy_account`, `copy_retired_name` and `copy_host_key` (tablecopy.py) write items copied from
another registry (registry/transfer.py) with the same layout, each only where no item is
(conditional), never replacing one.

The collection folder is not created here: on a cluster it belongs on the owner node's disk,
and the account's first login there makes it (workers/lock.py `make_account_dir`). A name
whose folder exists on this node is still never given out (a leftover is never adopted).

Cost and caching. Calls (tablecalls.py) run in a bounded thread pool (`max_concurrency`), never
on the event loop; botocore retries (standard mode, 3 tries) before an error counts. Account
rows read are kept for `cache_seconds` (default 5): **a sign-out, disable or deletion made
through another node takes effect on this one within `cache_seconds`** (at once on the node
that made it).
Host keys (immutable) are kept longer; so a logged-in device's request costs no DynamoDB call
while its account row is cached, and one GetItem otherwise.
When DynamoDB fails (throttled, unreachable, misconfigured), `account_for_key` answers from the
last account row read for up to `stale_seconds` (stale-if-error; counted in
`gateway_registry_stale_answers_total`); `seen` skips "last sync" (and tries again a
`SEEN_EVERY` later, not at the next request); everything else raises
`RegistryUnavailable` (503), counted in `gateway_registry_errors_total{kind}`.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from cachetools import TTLCache

from gateway import metrics, naming
from gateway.identity.provider import Identity
from gateway.identity.spelling import canonical
from gateway.registry.base import (
    ACTIVE,
    DELETING,
    SEEN_EVERY,
    Account,
    AccountBeingDeleted,
    IssuedKey,
    Registry,
    RegistryUnavailable,
    key_admits,
    key_digest,
    key_waits,
    quota_values,
)
from gateway.registry.table import (
    ACCOUNT,
    BY_EMAIL,
    BY_KEY_SUB,
    BY_USERNAME,
    KEY,
    NAME,
    NONCE,
    TTL_ATTRIBUTE,
    _account,
    _account_item,
    _key_item,
    _n,
    _s,
    make_client,
)
from gateway.registry.table import create_table as create_table
from gateway.registry.tablecalls import TableCalls, unavailable
from gateway.registry.tablecopy import CopyIn

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger("gateway.registry")

#: Attempts at one name when DynamoDB reports a conflicting transaction on the same items.
_CONFLICT_RETRIES = 5
#: Entries each cache holds (accounts, keys, names); LRU beyond.
_CACHE_ENTRIES = 100_000
#: How long `count_by_status` reuses its scan, in seconds (a scan reads the whole table).
_COUNT_SECONDS = 300.0
#: "#status" and "#name" in expressions: both are DynamoDB reserved words.
_NAMES = {"#status": "status", "#name": "name"}
#: The condition of every "seen" write: never on an account a prune has claimed.
_NOT_DELETING = "attribute_exists(pk) AND #status <> :deleting"


class DynamoRegistry(CopyIn, Registry):
    """The registry in DynamoDB table `table` through boto3 `client`; see the module docstring.
    `cache_seconds` and `stale_seconds` as `registry.*` (config/schema.py); `clock` gives Unix times
    for the rows, `monotonic` ages the caches."""

    def __init__(
        self,
        client: Any,
        table: str,
        collections_dir: Path,
        *,
        cache_seconds: float = 5.0,
        stale_seconds: float = 900.0,
        max_concurrency: int = 16,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        owns_client: bool = False,
    ) -> None:
        super().__init__(collections_dir)
        collections_dir.mkdir(parents=True, exist_ok=True)  # this node's disk (readiness)
        self._client = client
        self._clock = clock
        self._owns_client = owns_client
        self._calls = TableCalls(client, table, threads=max_concurrency)
        entries = _CACHE_ENTRIES
        #: sub → Account, trusted for `cache_seconds`.
        self._fresh: TTLCache[str, Account] = TTLCache(entries, cache_seconds, timer=monotonic)
        #: sub → Account, the last read, for answers while DynamoDB fails.
        self._stale: TTLCache[str, Account] = TTLCache(
            entries, max(stale_seconds, 1e-9), timer=monotonic
        )
        self._stale_seconds = stale_seconds
        #: key digest → (sub, generation, account name or None): key items never change
        #: (positive answers only).
        self._keys: TTLCache[str, tuple[str, int, str | None]] = TTLCache(
            entries, max(stale_seconds, 3600.0), timer=monotonic
        )
        #: name → sub: a name never changes owner while its account exists.
        self._names: TTLCache[str, str] = TTLCache(entries, 3600.0, timer=monotonic)
        self._counts: TTLCache[str, dict[str, int]] = TTLCache(1, _COUNT_SECONDS, timer=monotonic)
        #: sub → when `seen` last tried to write "last sync" (at most once per SEEN_EVERY,
        #: also while DynamoDB fails).
        self._seen_tried: TTLCache[str, float] = TTLCache(entries, SEEN_EVERY, timer=monotonic)

    @classmethod
    def from_config(cls, config: Config) -> DynamoRegistry:
        r = config.registry
        return cls(
            make_client(config),
            r.table,
            config.collections_dir,
            cache_seconds=r.cache_seconds,
            stale_seconds=r.stale_seconds,
            max_concurrency=r.max_concurrency,
            owns_client=True,
        )

    # -- the account row and the caches ----------------------------------------

    async def _update(
        self,
        sub: str,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str = "attribute_exists(pk)",
    ) -> Account | None:
        """UpdateItem on `account#<sub>` (never creating it); the new row, remembered, or None
        when the condition failed."""
        params: dict[str, Any] = {
            "TableName": self._calls.table,
            "Key": {"pk": _s(ACCOUNT + sub)},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ReturnValues": "ALL_NEW",
        }
        if values:  # DynamoDB refuses an empty map (an update that only removes attributes)
            params["ExpressionAttributeValues"] = values
        names = {k: v for k, v in _NAMES.items() if k in expression + condition}
        if names:
            params["ExpressionAttributeNames"] = names
        try:
            answer = await self._calls.call(
                "update_item", expected=("ConditionalCheckFailedException",), **params
            )
        except ClientError:
            return None
        account = _account(answer.get("Attributes"))
        self._remember(sub, account)
        return account

    def _remember(self, sub: str, account: Account | None) -> None:
        if account is None:
            self._fresh.pop(sub, None)
            self._stale.pop(sub, None)
        else:
            self._fresh[sub] = account
            if self._stale_seconds > 0:
                self._stale[sub] = account

    def _forget_keys(self, sub: str) -> None:
        for digest in [d for d, (owner, *_) in self._keys.items() if owner == sub]:
            self._keys.pop(digest, None)

    async def _read(self, sub: str) -> Account | None:
        """The account row, read now (consistent), and remembered."""
        account = _account(await self._calls.get_item(ACCOUNT + sub))
        self._remember(sub, account)
        return account

    # -- accounts -----------------------------------------------------------------------

    async def get(self, sub: str) -> Account | None:
        """The account, as read within the last `cache_seconds` (by this node's own writes at
        once)."""
        cached = self._fresh.get(sub)
        return cached if cached is not None else await self._read(sub)

    async def get_by_name(self, name: str) -> Account | None:
        sub = self._names.get(name)
        if sub is None:
            item = await self._calls.get_item(NAME + name)
            if item is None or "sub" not in item:
                return None
            sub = item["sub"]["S"]
            self._names[name] = sub
        account = await self.get(sub)
        if account is None or account.name != name:
            self._names.pop(name, None)
            return None
        return account

    async def count_by_status(self) -> dict[str, int]:
        """{status: accounts}, from a scan reused for `_COUNT_SECONDS` (it reads the table)."""
        counts = self._counts.get("all")
        if counts is None:
            counts = {}
            for item in await self._calls.scan_accounts(projection="#status"):
                status = item["status"]["S"]
                counts[status] = counts.get(status, 0) + 1
            self._counts["all"] = counts
        return dict(counts)

    async def count(self) -> int:
        return len(await self._calls.scan_accounts(projection="pk"))

    async def all(self) -> list[Account]:
        found = [_account(item) for item in await self._calls.scan_accounts()]
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    async def ensure(self, identity: Identity, *, refresh: bool = True) -> tuple[Account, bool]:
        """See `Registry.ensure`. The folder is not created (module docstring)."""
        existing = await self._read(identity.sub)
        if existing is not None:
            if refresh and (existing.cognito_username, existing.email) != (
                identity.username,
                identity.email,
            ):
                existing = await self._refresh(identity) or existing
            return existing, False
        base = naming.base_name(identity.username, identity.email)
        for name in naming.candidates(base):
            if not naming.is_safe(name):  # pragma: no cover - base_name only yields safe names
                raise ValueError(f"unsafe account name {name!r}")
            if (self._collections / name).exists():
                continue  # a leftover folder on this node is never adopted
            outcome = await self._create(identity, name)
            if isinstance(outcome, Account):
                return outcome, True
            if outcome == "account exists":
                account = await self._read(identity.sub)
                if account is not None:
                    return account, False
                # An `account#` item without an account's attributes (another writer's stub):
                # every name would fail the same way.
                raise unavailable("TransactWriteItems", "IncompleteAccountItem")
        raise AssertionError("unreachable")  # pragma: no cover - candidates() never ends

    async def _refresh(self, identity: Identity) -> Account | None:
        values = {
            ":u": _s(identity.username),
            ":uk": _s(canonical(identity.username)),
            ":now": _n(self._clock()),
        }
        expression = "SET cognito_username = :u, username_key = :uk, last_seen = :now"
        if identity.email is not None:  # as COALESCE(?, email): a known email is kept
            expression += ", email = :e, email_key = :ek"
            values |= {":e": _s(identity.email), ":ek": _s(canonical(identity.email))}
        values[":deleting"] = _s(DELETING)
        return await self._update(identity.sub, expression, values, condition=_NOT_DELETING)

    async def _create(self, identity: Identity, name: str) -> Account | str:
        """Claim `name` and create the account in one transaction: the account, or "name taken"
        or "account exists" (another node was first)."""
        now = self._clock()
        account = Account(
            sub=identity.sub,
            name=name,
            cognito_username=identity.username,
            email=identity.email,
            status=ACTIVE,
            created_at=now,
            last_seen=now,
        )
        new = "attribute_not_exists(pk)"
        writes = [
            {
                "Put": {
                    "TableName": self._calls.table,
                    "Item": {"pk": _s(NAME + name), "sub": _s(identity.sub)},
                    "ConditionExpression": new,
                }
            },
            {
                "Put": {
                    "TableName": self._calls.table,
                    "Item": _account_item(account),
                    "ConditionExpression": new,
                }
            },
        ]
        for _ in range(_CONFLICT_RETRIES):
            try:
                await self._calls.call(
                    "transact_write_items",
                    expected=("TransactionCanceledException",),
                    TransactItems=writes,
                )
            except ClientError as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if len(codes) == 2 and codes[1] == "ConditionalCheckFailed":
                    return "account exists"
                if codes and codes[0] == "ConditionalCheckFailed":
                    # Taken; maybe by another node creating this very account just now.
                    return "account exists" if await self._read(identity.sub) else "name taken"
                if "TransactionConflict" in codes:
                    continue
                raise unavailable("TransactWriteItems", ",".join(map(str, codes))) from None
            self._remember(identity.sub, account)
            self._names[name] = identity.sub
            self._counts.clear()
            return account
        raise unavailable("TransactWriteItems", "TransactionConflict")

    async def others_named(self, sub: str, names: set[str]) -> list[Account]:
        """See `Registry.others_named`: one index query per name and index (eventually
        consistent: an account created in the last second may be missing)."""
        found: dict[str, Account] = {}
        for name in sorted(names):
            for index, attr in ((BY_USERNAME, "username_key"), (BY_EMAIL, "email_key")):
                for item in await self._calls.query(index, attr, name):
                    account = _account(item)
                    if account is not None and account.sub != sub and account.active:
                        found[account.sub] = account
        return [
            a
            for a in sorted(found.values(), key=lambda a: a.name)
            if canonical(a.cognito_username) in names or canonical(a.email or "") in names
        ]

    async def set_status(self, sub: str, status: str, *, only_from: str | None = None) -> bool:
        condition = "attribute_exists(pk)"
        values = {":s": _s(status)}
        if only_from is not None:
            condition += " AND #status = :from"
            values[":from"] = _s(only_from)
        changed = await self._update(sub, "SET #status = :s", values, condition=condition)
        if status != ACTIVE:
            self._forget_keys(sub)
        self._counts.clear()
        return changed is not None

    async def touch(self, sub: str) -> bool:
        values = {":now": _n(self._clock()), ":deleting": _s(DELETING)}
        expression = "SET last_seen = :now, checked_at = :now"
        return await self._update(sub, expression, values, condition=_NOT_DELETING) is not None

    async def claim_for_deletion(self, sub: str, unseen_since: float) -> Account | None:
        """See `Registry.claim_for_deletion`: one UpdateItem with a ConditionExpression
        (DynamoDB orders it against a login's conditional `touch`)."""
        values = {":deleting": _s(DELETING), ":cut": _n(unseen_since)}
        # A missing time reads as 0 (table.py `_account`): before any cutoff.
        condition = _NOT_DELETING + "".join(
            f" AND (attribute_not_exists({t}) OR {t} < :cut)"
            for t in ("created_at", "last_seen", "checked_at")
        )
        claimed = await self._update(sub, "SET #status = :deleting", values, condition=condition)
        self._forget_keys(sub)
        self._counts.clear()
        return claimed

    async def end_portal_sessions(self, sub: str) -> None:
        await self._update(sub, "ADD portal_epoch :one", {":one": _n(1)})

    async def set_quota(self, sub: str, megs: Mapping[str, int | None]) -> bool:
        """See `Registry.set_quota`: one UpdateItem (SET the limits given, REMOVE those back
        to the default), only on an existing account."""
        values = quota_values(megs)
        if not values:
            return await self.get(sub) is not None
        given = {k: v for k, v in values.items() if v is not None}
        expression = " ".join(
            part
            for part in (
                "SET " + ", ".join(f"{k} = :{k}" for k in given) if given else "",
                "REMOVE " + ", ".join(k for k in values if k not in given)
                if len(given) < len(values)
                else "",
            )
            if part
        )
        attribute_values = {f":{k}": _n(v) for k, v in given.items()}
        return await self._update(sub, expression, attribute_values) is not None

    async def seen(self, account: Account) -> None:
        """See `Registry.seen`. Never raises: "last sync" is not worth a failed sync."""
        now = self._clock()
        if now - account.last_seen < SEEN_EVERY:
            return
        known = self._fresh.get(account.sub)
        if known is not None and now - known.last_seen < SEEN_EVERY:
            return
        if account.sub in self._seen_tried:
            return  # tried within SEEN_EVERY and failed: not again on every request
        self._seen_tried[account.sub] = now
        try:
            values = {":now": _n(now), ":deleting": _s(DELETING)}
            await self._update(account.sub, "SET last_seen = :now", values, condition=_NOT_DELETING)
        except RegistryUnavailable:
            pass  # logged and counted

    async def mark_checked(self, sub: str, when: float | None = None) -> None:
        when = self._clock() if when is None else when
        values = {":when": _n(when), ":deleting": _s(DELETING)}
        await self._update(sub, "SET checked_at = :when", values, condition=_NOT_DELETING)

    async def sign_out(self, sub: str) -> int:
        """See `Registry.sign_out`. The generation moves on in one conditional update (every
        node refuses older keys once its cached row is older than `cache_seconds`); the key
        items are removed afterwards, as housekeeping."""
        account = await self._update(sub, "ADD key_generation :one", {":one": _n(1)})
        self._forget_keys(sub)
        if account is None:
            raise KeyError(sub)
        await self._delete_keys(sub)
        return account.key_generation

    async def delete(self, sub: str) -> Account | None:
        account = await self._read(sub)
        if account is None:
            return None
        try:
            await self._calls.call(
                "transact_write_items",
                expected=("TransactionCanceledException",),
                TransactItems=[
                    {"Delete": {"TableName": self._calls.table, "Key": {"pk": _s(ACCOUNT + sub)}}},
                    {
                        # The claim stays, retired: the name is never given out again
                        # (`Registry.delete`). Never another account's claim; a missing one is
                        # made retired.
                        "Update": {
                            "TableName": self._calls.table,
                            "Key": {"pk": _s(NAME + account.name)},
                            "UpdateExpression": "SET #sub = :sub, retired_at = :now",
                            "ConditionExpression": "attribute_not_exists(pk) OR #sub = :sub",
                            "ExpressionAttributeNames": {"#sub": "sub"},
                            "ExpressionAttributeValues": {
                                ":sub": _s(sub),
                                ":now": _n(self._clock()),
                            },
                        }
                    },
                ],
            )
        except ClientError:
            raise unavailable("TransactWriteItems", "TransactionCanceled") from None
        self._remember(sub, None)
        self._names.pop(account.name, None)
        self._forget_keys(sub)
        self._counts.clear()
        await self._delete_keys(sub)
        return account

    async def _delete_keys(self, sub: str) -> None:
        """Remove the key items of `sub` (already refused by generation or a missing account:
        a failure here is logged, not raised)."""
        try:
            keys = [item["pk"] for item in await self._calls.query(BY_KEY_SUB, "key_sub", sub)]
            for chunk in _chunks(keys, 25):
                requests = [{"DeleteRequest": {"Key": {"pk": pk}}} for pk in chunk]
                await self._calls.call(
                    "batch_write_item", RequestItems={self._calls.table: requests}
                )
        except RegistryUnavailable:
            log.warning("old host keys left in the table (refused anyway)", extra={"sub": sub})

    # -- signed requests ----------------------------------------------------------------

    async def spend_nonce(self, nonce: str, until: float) -> bool:
        """See `Registry.spend_nonce`: one conditional PutItem (absent, or expired)."""
        try:
            await self._calls.call(
                "put_item",
                expected=("ConditionalCheckFailedException",),
                TableName=self._calls.table,
                Item={
                    "pk": _s(NONCE + nonce),
                    "until": _n(until),
                    TTL_ATTRIBUTE: _n(math.ceil(until)),
                },
                ConditionExpression="attribute_not_exists(pk) OR #until < :now",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={":now": _n(self._clock())},
            )
        except ClientError:
            return False
        return True

    # -- host keys ----------------------------------------------------------------------

    async def add_host_key(self, sub: str, host_key: str, generation: int = 0) -> None:
        """See `Registry.add_host_key`; the key item also names the account (`key_admits`)."""
        digest = key_digest(host_key)
        account = await self.get(sub)
        name = account.name if account is not None else None
        item = _key_item(IssuedKey(digest, sub, generation, self._clock()), name)
        if await self._calls.put_new(item):  # else issued before (INSERT OR IGNORE): keys never
            self._keys[digest] = (sub, generation, name)  # change owner or generation

    async def account_for_key(self, host_key: str) -> Account | None:
        """See `Registry.account_for_key`; answers as of at most `cache_seconds` ago, and from
        memory for up to `stale_seconds` while DynamoDB fails (module docstring)."""
        digest = key_digest(host_key)
        known = self._keys.get(digest)
        try:
            if known is None:
                item = await self._calls.get_item(KEY + digest)
                # The lookup is by digest; the explicit constant-time comparison keeps timing
                # independent of the key if the lookup ever changes.
                if item is None or not hmac.compare_digest(item["pk"]["S"], KEY + digest):
                    return None
                name = item["name"]["S"] if "name" in item else None
                known = (item["sub"]["S"], int(item["generation"]["N"]), name)
            account = await self.get(known[0])
            if account is not None and known[1] > account.key_generation:
                # A key newer than the cached row (signed out and logged in again through
                # another node): the row is stale, not the key; refusing it would log out
                # the device that has just logged in.
                account = await self._read(known[0])
        except RegistryUnavailable:
            account = self._stale.get(known[0]) if known is not None else None
            if account is None or not key_admits(account, *known[1:]):
                raise
            metrics.registry_stale_answer()
            return account
        if key_waits(account, *known[1:]):  # outside the try: never answered from memory
            raise AccountBeingDeleted("the key's account is being deleted")
        if account is None or not key_admits(account, *known[1:]):
            self._keys.pop(digest, None)
            return None
        self._keys[digest] = known
        return account

    def knows_key(self, host_key: str) -> bool:
        return key_digest(host_key) in self._keys

    async def host_key_count(self, sub: str) -> int:
        return len(await self._calls.query(BY_KEY_SUB, "key_sub", sub))

    # -- operations ---------------------------------------------------------------------

    async def writable(self) -> bool:
        """Whether the table answers a read now (reachable, permitted, present); never
        raises. Not a write: readiness probes come often, and DynamoDB has no lock to take."""
        try:
            await self._calls.get_item(ACCOUNT)  # "account#" alone: no account has an empty sub
        except RegistryUnavailable:
            return False
        return True

    async def close(self) -> None:
        # Let queued calls finish (each bounded by the botocore timeouts) before the client goes.
        await self._calls.close()
        if self._owns_client:
            self._client.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
