"""A registry outage on demand: the real SQLite registry, but every coroutine raises
`RegistryUnavailable` while `down`. Moto cannot make DynamoDB unreachable on demand, and what
these tests pin is the gateway's answer, not the store; the DynamoDB registry's own mapping of
AWS errors to `RegistryUnavailable` is tested in tests/test_registry.py.

The `outage` fixture (tests/conftest.py) makes `gateway.resources.open_registry` open these."""

from __future__ import annotations

import inspect
from typing import Any

from gateway.registry import Registry, RegistryUnavailable, SqliteRegistry


class Outage(SqliteRegistry):
    """The SQLite registry, but every coroutine raises `RegistryUnavailable` while `down`."""

    down = False

    async def writable(self) -> bool:
        return not self.down and await super().writable()


def _failing(name: str) -> Any:
    async def method(self: Outage, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise RegistryUnavailable("registry unavailable (test outage)")
        return await getattr(SqliteRegistry, name)(self, *args, **kwargs)

    return method


for _name in sorted(Registry.__abstractmethods__ - {"writable", "close"}):
    if inspect.iscoroutinefunction(getattr(Registry, _name)):  # not `knows_key`: memory only
        setattr(Outage, _name, _failing(_name))
