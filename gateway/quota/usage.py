"""An account's usage against its limits, as the portal, `accounts list`/`accounts quota` and
the metrics show it. Pure: sizes in (ops/usage.py measures them), verdicts and text out.

    over(used, limits) -> ("collection", "media")   the limits the stored data is over (the
                          per-file and upload limits apply to uploads, not to what is stored)
    limit_text(limit)  -> "250.0 MB" or "unlimited"
    share(used, limit) -> used / limit (0.0 when unlimited), for the metrics' histogram
    await limits_by_name(registry, defaults) -> name -> that account's `Limits` (one read
                          of every account: the usage totals' walk does it every few minutes)
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.ops.usage import Usage
from gateway.quota.guard import override_of
from gateway.quota.limits import Limits, Override, megs_text
from gateway.registry.base import Registry


def over(used: Usage, limits: Limits) -> tuple[str, ...]:
    found = []
    if limits.collection is not None and used.collection_bytes > limits.collection:
        found.append("collection")
    if limits.media is not None and used.media_bytes > limits.media:
        found.append("media")
    return tuple(found)


def limit_text(limit: int | None) -> str:
    return "unlimited" if limit is None else megs_text(limit)


def share(used: int, limit: int | None) -> float:
    return 0.0 if not limit else used / limit


async def limits_by_name(registry: Registry, defaults: Limits) -> Callable[[str], Limits]:
    own = {
        a.name: defaults.with_override(override_of(a))
        for a in await registry.all()
        if override_of(a) != Override()
    }
    return lambda name: own.get(name, defaults)
