"""The registry's DynamoDB table: its items and their attributes, its indexes, and making it.
The layout (which item holds what, and why) is in dynamo.py's docstring; `DynamoRegistry` reads
and writes these items.

    create_table(client, name)   the table with its indexes and the nonce items' TTL
    make_client(config)          the boto3 client `registry.*` describes
    _account(item) / _account_item(account) / _key_item(key, name)   items <-> values
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from gateway.aws import client as awsclient
from gateway.identity.spelling import canonical
from gateway.registry.base import QUOTA_FIELDS, Account, IssuedKey

if TYPE_CHECKING:
    from gateway.config import Config

ACCOUNT, NAME, KEY, NONCE = "account#", "name#", "key#", "nonce#"
#: The table's TTL attribute (Unix seconds, whole): only nonce items carry it.
TTL_ATTRIBUTE = "expires"
BY_USERNAME, BY_EMAIL, BY_KEY_SUB = "by-username", "by-email", "by-key-sub"


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
