"""Usage over all accounts, for the metrics: walked in a thread every few minutes, never per scrape.

    total(collections_dir) -> Totals                 one walk (blocking; usage.py per folder)
    UsageTotals(collections_dir, every=300).latest   the last walk's Totals, or None before it
    usage_totals (cleanup_ctx)                       walks at start, then every `every` seconds

Walking thousands of account folders costs a stat per file, so a scrape only reads the last
result (metrics.py: `gateway_usage_*`, with the time it was computed). Totals only: no account
name reaches the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.appkeys import USAGE
from gateway.ops.usage import usage

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


def total(collections_dir: Path, clock: Callable[[], float] = time.time) -> Totals:
    folders = collection = files = size = 0
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
    return Totals(folders, collection, files, size, clock())


class UsageTotals:
    def __init__(self, collections_dir: Path, every: float = EVERY) -> None:
        self._dir = collections_dir
        self._every = every
        self.latest: Totals | None = None

    async def run(self) -> None:
        """Walk now and then every `every` seconds, until cancelled."""
        while True:
            try:
                self.latest = await asyncio.to_thread(total, self._dir)
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
