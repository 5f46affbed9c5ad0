"""Usage over all accounts, for the metrics: walked in a thread every few minutes, never per scrape.

    total(collections_dir, limits) -> Totals         one walk (blocking; usage.py per folder)
    UsageTotals(collections_dir, every=300, limits).latest
                                                     the last walk's Totals, or None before it
    usage_totals (cleanup_ctx)                       walks at start, then every `every` seconds

Walking thousands of account folders costs a stat per file, so a scrape only reads the last
result (metrics.py: `gateway_usage_*`, with the time it was computed). Totals only: no account
name reaches the metrics (a label per account would grow the series with every sign-up): with
`limits` (account name -> its quota `Limits`, quota/usage.py `limits_by_name`, read before each
walk) also the accounts over a limit and each account's share of its limits, for histograms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.appkeys import USAGE
from gateway.ops.usage import usage
from gateway.quota import usage as quota_usage
from gateway.quota.limits import Limits

log = logging.getLogger(__name__)

#: Seconds between walks.
EVERY = 300.0


@dataclass(frozen=True)
class Totals:
    accounts: int
    collection_bytes: int
    media_files: int
    media_bytes: int
    #: Unix time the walk finished.
    computed_at: float
    #: Accounts whose stored collection or media is over its limit.
    over_quota: int = 0
    #: Each account's collection and media as a share of its limit (1.0 = at the limit; 0.0
    #: when unlimited), in no order.
    collection_shares: tuple[float, ...] = ()
    media_shares: tuple[float, ...] = ()


def total(
    collections_dir: Path,
    clock: Callable[[], float] = time.time,
    limits: Callable[[str], Limits] | None = None,
) -> Totals:
    folders = collection = files = size = over = 0
    collection_shares: list[float] = []
    media_shares: list[float] = []
    try:
        entries = list(os.scandir(collections_dir))
    except OSError:
        entries = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        used = usage(Path(entry.path))
        folders += 1
        collection += used.collection_bytes
        files += used.media_files
        size += used.media_bytes
        if limits is not None:
            own = limits(entry.name)
            over += bool(quota_usage.over(used, own))
            collection_shares.append(quota_usage.share(used.collection_bytes, own.collection))
            media_shares.append(quota_usage.share(used.media_bytes, own.media))
    return Totals(
        folders,
        collection,
        files,
        size,
        clock(),
        over,
        tuple(collection_shares),
        tuple(media_shares),
    )


class UsageTotals:
    def __init__(
        self,
        collections_dir: Path,
        every: float = EVERY,
        limits: Callable[[], Awaitable[Callable[[str], Limits]]] | None = None,
    ) -> None:
        self._dir = collections_dir
        self._every = every
        self._limits = limits
        self.latest: Totals | None = None

    async def run(self) -> None:
        """Walk now and then every `every` seconds, until cancelled."""
        while True:
            try:
                limits = await self._limits() if self._limits is not None else None
                self.latest = await asyncio.to_thread(total, self._dir, time.time, limits)
            except Exception:  # a walk must never end the loop; the next one may succeed
                log.exception("usage totals: walking the collections failed")
            await asyncio.sleep(self._every)


async def usage_totals(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the walking task of `app[USAGE]`, cancelled at shutdown."""
    task = asyncio.create_task(app[USAGE].run(), name="usage totals")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
