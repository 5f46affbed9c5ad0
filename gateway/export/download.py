"""Exports over HTTP: who may start one now, and sending the package without holding it in memory.

    Downloads(per_day, concurrent, clock=time.monotonic)
        admit(sub) -> Ticket | Refused     Ticket: `release()` (or leave it as a context
                                           manager) frees the slot
    await send(request, package, filename) -> web.StreamResponse

Admission (pure, injected clock): at most `per_day` exports per account in any 24 hours (each
admitted one counts, finished or not: building one costs the server the same), one at a time
per account in this process (a second click while one builds is refused, not queued; across
processes the backup handshake's flock refuses it: gateway/export/job.py), and at most
`concurrent` in this process at once (each copies and compresses a whole collection). Refused
says why: "limit" (with `retry_after` seconds), "running", "busy".

`send` streams the file in 256 KiB pieces read in a thread, with Content-Length, as an
attachment that no cache keeps. The package's folder is removed as soon as the file is open
(the open file stays readable), so neither a finished nor an abandoned download leaves it on disk.
The client must read at the pace proxied answers are held to (web/pace.py: the
`server.body_idle_timeout_seconds`, `min_body_bytes_per_second` and
`min_body_average_bytes_per_second` settings; the time spent reading the disk is left out): one
that stops reading, or trickles, has its connection cut and the file closed, so the space of the
removed package is freed then, not whenever the client lets the connection go.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.auth.limiter import FailureLimiter
from gateway.errors import ClientStalled
from gateway.export import discard
from gateway.web.bodies import loop_time, paced_write, pacing_of

DAY = 86_400.0
CHUNK = 256 * 1024


@dataclass(frozen=True)
class Refused:
    reason: str
    retry_after: int = 0


class Ticket:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Free the account's and the process's slot (once; later calls do nothing)."""
        if self._release is not None:
            release, self._release = self._release, None
            release()


class Downloads:
    def __init__(
        self, per_day: int, concurrent: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_day = FailureLimiter(per_day, DAY, clock=clock)
        self._concurrent = concurrent
        self._running: set[str] = set()

    def admit(self, sub: str) -> Ticket | Refused:
        if sub in self._running:
            return Refused("running")
        wait = self._per_day.retry_after(sub)
        if wait is not None:
            return Refused("limit", wait)
        if len(self._running) >= self._concurrent:
            return Refused("busy", 30)
        self._per_day.record_failure(sub)  # a use, not a failure: the same sliding window
        self._running.add(sub)
        return Ticket(lambda: self._running.discard(sub))


async def send(request: web.Request, package: Path, filename: str) -> web.StreamResponse:
    handle = await asyncio.to_thread(open, package, "rb")
    try:
        discard(package)
        size = os.fstat(handle.fileno()).st_size
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Content-Length": str(size),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        pace = pacing_of(request).start(loop_time())
        try:
            while True:
                reading_since = loop_time()
                chunk = await asyncio.to_thread(handle.read, CHUNK)
                pace.skip(loop_time() - reading_since)  # the disk's time, not the client's
                if not chunk:
                    break
                await paced_write(response, chunk, pace)
        except ClientStalled:
            # It does not read the package: cut it, so the removed file's space is freed now.
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("client stalled reading the export") from None
        await response.write_eof()
        return response
    finally:
        handle.close()
