"""Opening the registry the configuration chooses: `open_registry(config)`, and the SQLite
registry's file name in the data folder (`REGISTRY_FILE`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.registry.base import Registry
from gateway.registry.sqlite import SqliteRegistry

if TYPE_CHECKING:
    from gateway.config import Config

#: The SQLite registry's file name inside the data folder.
REGISTRY_FILE = "registry.sqlite3"


def open_registry(config: Config) -> Registry:
    """The registry `config.registry.backend` chooses: "sqlite", `<data>/registry.sqlite3`;
    "dynamodb", the table `config.registry.table` (which must exist: `dynamo.create_table`,
    deploy/dynamodb.yaml). Folders are under `config.collections_dir` either way."""
    if config.registry.backend == "dynamodb":
        from gateway.registry.dynamo import DynamoRegistry

        return DynamoRegistry.from_config(config)
    return SqliteRegistry(config.data_dir / REGISTRY_FILE, config.collections_dir)
