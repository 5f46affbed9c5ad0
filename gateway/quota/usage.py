"""An account's usage against its limits, as the portal, `accounts list`/`accounts quota` and
the metrics show it. Pure: sizes in (ops/usage.py measures them), verdicts and text out.

    over(used, limits) -> ("collection", "media")   the limits the stored data is over (the
                          per-file and upload limits apply to uploads, not to what is stored)
    limit_text(limit)  -> "250.0 MB" or "unlimited"
    share(used, limit) -> used / limit (0.0 when unlimited), for the metrics' histogram
"""

from __future__ import annotations

from gateway.ops.usage import Usage
from gateway.quota.limits import Limits, megs_text


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
