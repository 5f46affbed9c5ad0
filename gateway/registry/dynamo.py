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

`copy_account`, `copy_retired_name` and `copy_host_key` write items copied from another
registry (registry/transfer.py) with the same layout, each only where no item is (conditional),
never replacing one.

The collection folder is not created here: on a cluster it belongs on the owner node's disk,
and the account's first login there makes it (workers/lock.py `make_account_dir`). A name
whose folder exists on this node is still never given out (a leftover is never adopted).

Cost and caching. Calls run in a bounded thread pool (`max_concurrency`), never on the event
loop; botocore retries (standard mode, 3 tries) before an error counts. Account rows read are
kept for `cache_seconds` (default 5): **a sign-out, disable or deletion made through another
node takes effect on this one within `cache_seconds`** (at once on the node that made it).
Host keys (immutable) are kept longer; so a logged-in device's request costs no DynamoDB call
while its account row is cached, and one GetItem otherwise.
When DynamoDB fails (throttled, unreachable, misconfigured), `account_for_key` answers from the
last account row read for up to `stale_seconds` (stale-if-error; counted in
`gateway_registry_stale_answers_total`); `seen` skips "last sync" (and tries again a
`SEEN_EVERY` later, not at the next request); everything else raises
`RegistryUnavailable` (503), counted in `gateway_registry_errors_total{kind}`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from cachetools import TTLCache

from gateway import metrics, naming
from gateway.aws import client as awsclient
from gateway.identity.provider import Identity
from gateway.identity.spelling import canonical
from gateway.registry import transfer
from gateway.registry.base import (
    ACTIVE,
    QUOTA_FIELDS,
    SEEN_EVERY,
    Account,
    IssuedKey,
    Registry,
    RegistryUnavailable,
    RetiredName,
    key_admits,
    key_digest,
    quota_values,
)

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger("gateway.registry")

ACCOUNT, NAME, KEY, NONCE = "account#", "name#", "key#", "nonce#"
#: The table's TTL attribute (Unix seconds, whole): only nonce items carry it.
TTL_ATTRIBUTE = "expires"
BY_USERNAME, BY_EMAIL, BY_KEY_SUB = "by-username", "by-email", "by-key-sub"
#: Error codes after which a call may succeed later by itself (metrics label, log level).
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_UNAVAILABLE = {"InternalServerError", "ServiceUnavailable", "TransactionConflictException"}
#: Attempts at one name when DynamoDB reports a conflicting transaction on the same items.
_CONFLICT_RETRIES = 5
#: Entries each cache holds (accounts, keys, names); LRU beyond.
_CACHE_ENTRIES = 100_000
#: How long `count_by_status` reuses its scan, in seconds (a scan reads the whole table).
_COUNT_SECONDS = 300.0
#: "#status" and "#name" in expressions: both are DynamoDB reserved words.
_NAMES = {"#status": "status", "#name": "name"}


def create_table(client: Any, name: str) -> None:
    """Create the registry table `name` (on-demand capacity) with its indexes and TTL on
    `TTL_ATTRIBUTE`, and wait until it is active; nothing if it exists. `client`: a boto3
    DynamoDB client. Raises botocore's ClientError for anything but "exists"."""
    string = "S"
    try:
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": attr, "AttributeType": string}
                for attr in ("pk", "username_key", "email_key", "key_sub")
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                _index(BY_USERNAME, "username_key", "ALL"),
                _index(BY_EMAIL, "email_key", "ALL"),
                _index(BY_KEY_SUB, "key_sub", "KEYS_ONLY"),
            ],
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
        client.get_waiter("table_exists").wait(TableName=name)
        return
    client.get_waiter("table_exists").wait(TableName=name)
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


def _index(name: str, key: str, projection: str) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
        "Projection": {"ProjectionType": projection},
    }


def make_client(config: Config) -> Any:
    """A DynamoDB client for `config.registry` (region: its own, else the user pool's)."""
    from gateway.config import region_of

    r = config.registry
    return awsclient.make(
        "dynamodb",
        region=r.region or region_of(config.cognito),
        endpoint_url=r.endpoint_url,
        connect_timeout=r.connect_timeout,
        read_timeout=r.read_timeout,
        max_concurrency=r.max_concurrency,
    )


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _account(item: dict[str, Any] | None) -> Account | None:
    if item is None or "sub" not in item:
        return None

    def number(attr: str) -> float:
        return float(item[attr]["N"]) if attr in item else 0.0

    return Account(
        sub=item["sub"]["S"],
        name=item["name"]["S"],
        cognito_username=item["cognito_username"]["S"],
        email=item["email"]["S"] if "email" in item else None,
        status=item["status"]["S"],
        created_at=number("created_at"),
        last_seen=number("last_seen"),
        checked_at=number("checked_at"),
        key_generation=int(number("key_generation")),
        portal_epoch=int(number("portal_epoch")),
        **{name: int(item[name]["N"]) for name in QUOTA_FIELDS if name in item},
    )


def _account_item(account: Account) -> dict[str, Any]:
    """The `account#<sub>` item for `account`, with its index keys."""
    item = {
        "pk": _s(ACCOUNT + account.sub),
        "sub": _s(account.sub),
        "name": _s(account.name),
        "cognito_username": _s(account.cognito_username),
        "username_key": _s(canonical(account.cognito_username)),
        "status": _s(account.status),
        "created_at": _n(account.created_at),
        "last_seen": _n(account.last_seen),
        "checked_at": _n(account.checked_at),
        "key_generation": _n(account.key_generation),
        "portal_epoch": _n(account.portal_epoch),
    }
    if account.email is not None:
        item |= {"email": _s(account.email), "email_key": _s(canonical(account.email))}
    for name in QUOTA_FIELDS:
        if getattr(account, name) is not None:
            item[name] = _n(getattr(account, name))
    return item


def _key_item(key: IssuedKey, name: str | None) -> dict[str, Any]:
    """The `key#<digest>` item: the key opens only the account `name` (None: not known)."""
    item = {
        "pk": _s(KEY + key.digest),
        "sub": _s(key.sub),
        "key_sub": _s(key.sub),
        "generation": _n(key.generation),
        "created_at": _n(key.created_at),
    }
    if name is not None:
        item["name"] = _s(name)
    return item


class DynamoRegistry(Registry):
    """The registry in DynamoDB table `table` through boto3 `client`; see the module docstring.
    `cache_seconds` and `stale_seconds` as `registry.*` (config.py); `clock` gives Unix times
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
        self._table = table
        self._clock = clock
        self._owns_client = owns_client
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix="registry"
        )
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

    # -- calls --------------------------------------------------------------------------

    async def _call(self, operation: str, *, expected: tuple[str, ...] = (), **params: Any) -> Any:
        """One API call in the thread pool. ClientErrors whose code is in `expected` are
        raised as they are; every other failure as a logged, counted RegistryUnavailable."""
        method = functools.partial(getattr(self._client, operation), **params)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, method)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in expected:
                raise
            error = self._unavailable(operation, code)
        except BotoCoreError as exc:
            # Refused, reset, DNS, TLS, timeouts (unavailable); no credentials or region, bad
            # parameters (misconfigured). The class name only: some messages quote parameters.
            reachable = not isinstance(exc, (BotoConnectionError, HTTPClientError))
            kind = "misconfigured" if reachable else "unavailable"
            error = self._unavailable(operation, type(exc).__name__, kind)
        except RuntimeError:  # the pool is shut down: the gateway is stopping
            error = RegistryUnavailable("registry closing")
        # Raised outside the except blocks: botocore's exception is not chained into logs.
        raise error

    @staticmethod
    def _unavailable(operation: str, code: str, kind: str | None = None) -> RegistryUnavailable:
        """The error to raise (and log and count) for a failed call; `kind` from `code` (an AWS
        error code) unless given: throttled, unavailable, or misconfigured (a missing table,
        denied access: this gateway's setup, logged at ERROR)."""
        if kind is None:
            kind = (
                "throttled"
                if code in _THROTTLED
                else "unavailable"
                if code in _UNAVAILABLE
                else "misconfigured"
            )
        level = logging.ERROR if kind == "misconfigured" else logging.WARNING
        metrics.registry_error(kind)
        detail = f"registry unavailable: DynamoDB {operation} failed ({kind}: {code})"
        log.log(level, "%s", detail, extra={"operation": operation, "code": code, "kind": kind})
        return RegistryUnavailable(detail)

    async def _get_item(self, pk: str) -> dict[str, Any] | None:
        answer = await self._call(
            "get_item", TableName=self._table, Key={"pk": _s(pk)}, ConsistentRead=True
        )
        return answer.get("Item")

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
            "TableName": self._table,
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
            answer = await self._call(
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
        account = _account(await self._get_item(ACCOUNT + sub))
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
            item = await self._get_item(NAME + name)
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
            for item in await self._scan_accounts(projection="#status"):
                status = item["status"]["S"]
                counts[status] = counts.get(status, 0) + 1
            self._counts["all"] = counts
        return dict(counts)

    async def count(self) -> int:
        return len(await self._scan_accounts(projection="pk"))

    async def all(self) -> list[Account]:
        found = [_account(item) for item in await self._scan_accounts()]
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    async def _scan_accounts(self, projection: str | None = None) -> list[dict[str, Any]]:
        """Every `account#` item (a filtered scan: other items are read, never returned)."""
        params: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(pk, :account)",
            "ExpressionAttributeValues": {":account": _s(ACCOUNT)},
        }
        if projection is not None:
            params["ProjectionExpression"] = projection
            if projection.startswith("#"):
                params["ExpressionAttributeNames"] = {projection: projection[1:]}
        return await self._all_pages("scan", params)

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
                raise self._unavailable("TransactWriteItems", "IncompleteAccountItem")
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
        return await self._update(identity.sub, expression, values)

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
                    "TableName": self._table,
                    "Item": {"pk": _s(NAME + name), "sub": _s(identity.sub)},
                    "ConditionExpression": new,
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _account_item(account),
                    "ConditionExpression": new,
                }
            },
        ]
        for _ in range(_CONFLICT_RETRIES):
            try:
                await self._call(
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
                raise self._unavailable("TransactWriteItems", ",".join(map(str, codes))) from None
            self._remember(identity.sub, account)
            self._names[name] = identity.sub
            self._counts.clear()
            return account
        raise self._unavailable("TransactWriteItems", "TransactionConflict")

    async def others_named(self, sub: str, names: set[str]) -> list[Account]:
        """See `Registry.others_named`: one index query per name and index (eventually
        consistent: an account created in the last second may be missing)."""
        found: dict[str, Account] = {}
        for name in sorted(names):
            for index, attr in ((BY_USERNAME, "username_key"), (BY_EMAIL, "email_key")):
                for item in await self._query(index, attr, name):
                    account = _account(item)
                    if account is not None and account.sub != sub and account.active:
                        found[account.sub] = account
        return [
            a
            for a in sorted(found.values(), key=lambda a: a.name)
            if canonical(a.cognito_username) in names or canonical(a.email or "") in names
        ]

    async def _query(self, index: str, attr: str, value: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": f"{attr} = :v",
            "ExpressionAttributeValues": {":v": _s(value)},
        }
        return await self._all_pages("query", params)

    async def _all_pages(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The items of every page of a scan or query."""
        items: list[dict[str, Any]] = []
        while True:
            page = await self._call(operation, **params)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            params = {**params, "ExclusiveStartKey": page["LastEvaluatedKey"]}

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

    async def touch(self, sub: str) -> None:
        now = _n(self._clock())
        await self._update(sub, "SET last_seen = :now, checked_at = :now", {":now": now})

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
            await self._update(account.sub, "SET last_seen = :now", {":now": _n(now)})
        except RegistryUnavailable:
            pass  # logged and counted

    async def mark_checked(self, sub: str, when: float | None = None) -> None:
        when = self._clock() if when is None else when
        await self._update(sub, "SET checked_at = :when", {":when": _n(when)})

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
            await self._call(
                "transact_write_items",
                expected=("TransactionCanceledException",),
                TransactItems=[
                    {"Delete": {"TableName": self._table, "Key": {"pk": _s(ACCOUNT + sub)}}},
                    {
                        # The claim stays, retired: the name is never given out again
                        # (`Registry.delete`). Never another account's claim; a missing one is
                        # made retired.
                        "Update": {
                            "TableName": self._table,
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
            raise self._unavailable("TransactWriteItems", "TransactionCanceled") from None
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
            keys = [item["pk"] for item in await self._query(BY_KEY_SUB, "key_sub", sub)]
            for chunk in _chunks(keys, 25):
                requests = [{"DeleteRequest": {"Key": {"pk": pk}}} for pk in chunk]
                await self._call("batch_write_item", RequestItems={self._table: requests})
        except RegistryUnavailable:
            log.warning("old host keys left in the table (refused anyway)", extra={"sub": sub})

    # -- signed requests ----------------------------------------------------------------

    async def spend_nonce(self, nonce: str, until: float) -> bool:
        """See `Registry.spend_nonce`: one conditional PutItem (absent, or expired)."""
        try:
            await self._call(
                "put_item",
                expected=("ConditionalCheckFailedException",),
                TableName=self._table,
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
        if await self._put_new(item):  # else issued before (INSERT OR IGNORE): keys never
            self._keys[digest] = (sub, generation, name)  # change owner or generation

    async def account_for_key(self, host_key: str) -> Account | None:
        """See `Registry.account_for_key`; answers as of at most `cache_seconds` ago, and from
        memory for up to `stale_seconds` while DynamoDB fails (module docstring)."""
        digest = key_digest(host_key)
        known = self._keys.get(digest)
        try:
            if known is None:
                item = await self._get_item(KEY + digest)
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
        if account is None or not key_admits(account, *known[1:]):
            self._keys.pop(digest, None)
            return None
        self._keys[digest] = known
        return account

    def knows_key(self, host_key: str) -> bool:
        return key_digest(host_key) in self._keys

    async def host_key_count(self, sub: str) -> int:
        return len(await self._query(BY_KEY_SUB, "key_sub", sub))

    # -- copying a registry in (registry/transfer.py) -----------------------------------

    async def copy_account(self, account: Account, *, dry_run: bool = False) -> tuple[str, str]:
        """Write `account` (all its fields) and its name claim, unless either is in the table:
        (outcome, reason) as `transfer.COPIED`, `PRESENT` (the same account) or `CONFLICT` (a
        reason naming no key). `dry_run`: read only."""
        outcome = await self._compare_account(account)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        try:
            await self._call(
                "transact_write_items",
                expected=("TransactionCanceledException",),
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": {"pk": _s(NAME + account.name), "sub": _s(account.sub)},
                            # Its own claim (not retired) may be there: an account deleted in
                            # the table keeps its claim retired and is not made again.
                            "ConditionExpression": "attribute_not_exists(pk) OR "
                            "(#sub = :sub AND attribute_not_exists(retired_at))",
                            "ExpressionAttributeNames": {"#sub": "sub"},
                            "ExpressionAttributeValues": {":sub": _s(account.sub)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _account_item(account),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ],
            )
        except ClientError:
            return transfer.after_failed_write(await self._compare_account(account))
        self._remember(account.sub, account)
        self._counts.clear()
        return outcome

    async def _compare_account(self, account: Account) -> tuple[str, str]:
        claim = await self._get_item(NAME + account.name)
        if claim is not None:
            if claim.get("sub", {}).get("S") != account.sub:
                return transfer.CONFLICT, "its name is held by another account in the table"
            if "retired_at" in claim:
                return transfer.CONFLICT, "deleted in the table (its name is retired there)"
        there = await self._read(account.sub)
        if there is None:
            return transfer.COPIED, ""
        changed = transfer.differences(there, account)
        if changed:
            return transfer.CONFLICT, "differs in the table: " + ", ".join(changed)
        return transfer.PRESENT, ""

    async def copy_retired_name(
        self, retired: RetiredName, *, dry_run: bool = False
    ) -> tuple[str, str]:
        """Write the retired claim `name#<name>` unless a claim is in the table; as
        `copy_account`."""
        outcome = await self._compare_retired(retired)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        item = {
            "pk": _s(NAME + retired.name),
            "sub": _s(retired.sub),
            "retired_at": _n(retired.retired_at),
        }
        if await self._put_new(item):
            return outcome
        return transfer.after_failed_write(await self._compare_retired(retired))

    async def _compare_retired(self, retired: RetiredName) -> tuple[str, str]:
        claim = await self._get_item(NAME + retired.name)
        if claim is None:
            return transfer.COPIED, ""
        if claim.get("sub", {}).get("S") != retired.sub:
            return transfer.CONFLICT, "the name is held by another account in the table"
        if "retired_at" not in claim:
            return (
                transfer.CONFLICT,
                "deleted in the SQLite registry but not in the table: delete it again",
            )
        return transfer.PRESENT, ""

    async def copy_host_key(
        self, key: IssuedKey, name: str, *, dry_run: bool = False
    ) -> tuple[str, str]:
        """Write `key#<digest>` (issued to the account `name`) unless it is in the table; as
        `copy_account`."""
        outcome = await self._compare_key(key, name)
        if outcome[0] != transfer.COPIED or dry_run:
            return outcome
        if await self._put_new(_key_item(key, name)):
            return outcome
        return transfer.after_failed_write(await self._compare_key(key, name))

    async def _compare_key(self, key: IssuedKey, name: str) -> tuple[str, str]:
        item = await self._get_item(KEY + key.digest)
        if item is None:
            return transfer.COPIED, ""
        there = (
            item.get("sub", {}).get("S"),
            int(item["generation"]["N"]) if "generation" in item else None,
            item.get("name", {}).get("S", name),
        )
        if there != (key.sub, key.generation, name):
            return transfer.CONFLICT, "a host key differs in the table (account or generation)"
        return transfer.PRESENT, ""

    async def _put_new(self, item: dict[str, Any]) -> bool:
        """PutItem only if no item has its `pk`; whether it was written."""
        try:
            await self._call(
                "put_item",
                expected=("ConditionalCheckFailedException",),
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError:
            return False
        return True

    # -- operations ---------------------------------------------------------------------

    async def writable(self) -> bool:
        """Whether the table answers a read now (reachable, permitted, present); never
        raises. Not a write: readiness probes come often, and DynamoDB has no lock to take."""
        try:
            await self._get_item(ACCOUNT)  # "account#" alone: no account has an empty sub
        except RegistryUnavailable:
            return False
        return True

    async def close(self) -> None:
        # Let queued calls finish (each bounded by the botocore timeouts) before the client goes.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._owns_client:
            self._client.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
