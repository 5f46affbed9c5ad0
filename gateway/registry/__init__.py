"""Account registry: identity `sub` → local account, host key → account, behind one boundary.

    base.py     `Registry` (the async interface), `Account`, statuses, `key_digest`,
                `RegistryUnavailable` (503)
    sqlite.py   `SqliteRegistry`: one SQLite file in the data folder (the single-host default)
    dynamo.py   `DynamoRegistry`: one DynamoDB table shared by every node; `create_table`
    transfer.py `copy_registry`: a SQLite registry's contents into the table, never replacing an
                item there (`accounts copy-registry`)

`open_registry(config)` opens the one `registry.backend` chooses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.registry.base import (
    ACTIVE,
    DISABLED,
    SEEN_EVERY,
    STATUSES,
    SUSPENDED,
    Account,
    Registry,
    RegistryUnavailable,
    key_digest,
)
from gateway.registry.sqlite import SqliteRegistry

if TYPE_CHECKING:
    from gateway.config import Config

#: The SQLite registry's file name inside the data folder.
REGISTRY_FILE = "registry.sqlite3"

__all__ = [
    "ACTIVE",
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


def open_registry(config: Config) -> Registry:
    """The registry `config.registry.backend` chooses: "sqlite", `<data>/registry.sqlite3`;
    "dynamodb", the table `config.registry.table` (which must exist: `dynamo.create_table`,
    deploy/dynamodb.yaml). Folders are under `config.collections_dir` either way."""
    if config.registry.backend == "dynamodb":
        from gateway.registry.dynamo import DynamoRegistry

        return DynamoRegistry.from_config(config)
    return SqliteRegistry(config.data_dir / REGISTRY_FILE, config.collections_dir)
