"""A registry's coroutines as plain calls, for test code that runs outside the registry's loop
(the test thread beside a gateway served from a background thread, or a sync test)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


class BlockingRegistry:
    """`BlockingRegistry(registry, run).get(sub)` is `run(registry.get(sub))`. `run` runs a
    coroutine to its end: `RunningGateway.call` (on the gateway's loop) or `asyncio.run`.
    Other attributes (`folder`, ...) pass through."""

    def __init__(self, registry: Any, run: Callable[[Any], Any] = asyncio.run) -> None:
        self.inner = registry
        self._run = run

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._run(attr(*args, **kwargs))
        return attr
