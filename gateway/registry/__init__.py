"""Account registry: identity `sub` → local account, host key → account, behind one boundary.

base.py     `Registry` (the async interface), `Account`, statuses, `key_digest`,
            `RegistryUnavailable` (503)
sqlite.py   `SqliteRegistry`: one SQLite file in the data folder (the single-host default)
dynamo.py   `DynamoRegistry`: one DynamoDB table shared by every node; `create_table`
table.py    that table: its items, indexes and TTL, making it, items <-> values
tablecalls.py  its API calls: one call in the thread pool with errors mapped, pages, a
            conditional put
tablecopy.py   copying another registry's items in, never replacing one
transfer.py `copy_registry`: a SQLite registry's contents into the table, never replacing an
            item there (`accounts copy-registry`)
nonce.py    what the registry remembers of a verified signature (`Registry.spend_nonce`)
opening.py  `open_registry(config)`: the one `registry.backend` chooses; `REGISTRY_FILE`
"""

from __future__ import annotations

from gateway.registry.base import (
    ACTIVE,
    DELETING,
    DISABLED,
    SEEN_EVERY,
    STATUSES,
    SUSPENDED,
    Account,
    Registry,
    RegistryUnavailable,
    key_digest,
)
from gateway.registry.opening import REGISTRY_FILE, open_registry
from gateway.registry.sqlite import SqliteRegistry

__all__ = [
    "ACTIVE",
    "DELETING",
    "DISABLED",
    "REGISTRY_FILE",
    "SEEN_EVERY",
    "STATUSES",
    "SUSPENDED",
    "Account",
    "Registry",
    "RegistryUnavailable",
    "SqliteRegistry",
    "key_digest",
    "open_registry",
]
