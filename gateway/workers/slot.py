"""One account's worker as this gateway holds it: claim the account, start, publish, stop.

Contract:
- `Slot.bring_up()` claims the account's lock (lock.py). If another gateway process holds it,
  it returns that process's worker port and the slot owns nothing. Otherwise it removes what a
  killed predecessor left (leftovers.py), starts the worker (process.py), publishes its port
  for other gateways, and returns the port. On any failure or cancellation nothing is left
  behind: no process, no held lock. The published port is taken back
  (`AccountLock.unpublish`) the moment that worker exits, whatever the reason: until the pool
  notices and releases the lock, other gateways must not send to a port that another
  account's worker may hold next.
- `Slot.shut_down()` abandons a start in progress, stops the process (SIGINT, then SIGKILL),
  and only then releases the lock, so a successor can never overlap with it.
- The slot's `Usage` record (ledger.py) is the pool's bookkeeping; the slot only carries it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import metrics
from gateway.workers import leftovers, lock
from gateway.workers.containment import Box, Containment
from gateway.workers.ledger import Usage
from gateway.workers.process import WorkerProcess, start_worker

log = logging.getLogger("gateway.workers")


@dataclass(frozen=True)
class Launch:
    """What every worker of one pool is started with."""

    command: tuple[str, ...]
    collections_dir: Path
    #: The account's worker password (read from the registry: its key generation).
    secret_for: Callable[[str], Awaitable[str]]
    max_payload_megs: int
    start_timeout: float
    #: The box every worker runs in (none: uncontained, for tests of other things).
    containment: Containment | None = None


class Slot:
    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.account = usage.account
        #: The task running `bring_up()`; leases for this account all wait on it.
        self.start: asyncio.Task[int] | None = None
        self.process: WorkerProcess | None = None
        self.lock: lock.AccountLock | None = None
        #: The password our worker was started with (its account's key generation at start).
        self.secret: str | None = None
        #: Another gateway process's worker, as its lock published it (no `process` then).
        self.holder: lock.Holder | None = None
        #: Takes the published port back once our worker exits (module doc).
        self._watch: asyncio.Task[None] | None = None

    @property
    def dead(self) -> bool:
        """Started, and its process has exited since."""
        return self.process is not None and not self.process.alive

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    async def bring_up(self, launch: Launch, trusted: lock.Holder | None = None) -> int:
        """The port of the account's worker: ours (`self.process` set) or another gateway's
        (`self.holder` set; `trusted`: lock.claim)."""
        try:
            # Another gateway may be starting its worker right now: allow it a start timeout.
            claim = await lock.claim(
                launch.collections_dir, self.account, wait=launch.start_timeout, trusted=trusted
            )
            if claim.lock is None:
                assert claim.port is not None
                self.holder = claim.holder
                return claim.port
            self.lock = claim.lock
            # Ours now, and no worker of this account runs: what a killed one left can go.
            leftovers.remove_stale(self.lock.path.parent)
            began = time.monotonic()
            self.secret = await launch.secret_for(self.account)
            self.process = await start_worker(
                command=launch.command,
                account=self.account,
                secret=self.secret,
                collections_dir=launch.collections_dir,
                max_payload_megs=launch.max_payload_megs,
                start_timeout=launch.start_timeout,
                boxes=self._boxes(launch),
            )
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        try:
            self.lock.publish(self.process.port)
            self._watch = asyncio.create_task(self._unpublish_at_exit(self.process, self.lock))
        except OSError:
            # Only other gateways need it (they answer 503 meanwhile); this one can serve.
            log.warning(
                "cannot publish worker port", exc_info=True, extra={"account": self.account}
            )
        metrics.worker_started(time.monotonic() - began)
        log.info(
            "worker ready",
            extra={
                "account": self.account,
                "port": self.process.port,
                "pid": self.process.pid,
                "start_ms": round((time.monotonic() - began) * 1000),
            },
        )
        return self.process.port

    @staticmethod
    async def _unpublish_at_exit(process: WorkerProcess, held: lock.AccountLock) -> None:
        await process.wait()
        try:
            held.unpublish()
        except OSError:
            log.warning("cannot take a dead worker's port back", exc_info=True)

    def _boxes(self, launch: Launch) -> Callable[[], Box] | None:
        containment = launch.containment
        if containment is None:
            return None
        return lambda: containment.box(self.account)

    async def shut_down(self) -> None:
        try:
            if self.start is not None and not self.start.done():
                self.start.cancel()  # start_worker kills what it spawned; bring_up releases
                await asyncio.wait([self.start])
            if self.process is not None:
                await self.process.stop()
        finally:
            # Only after the process is reaped: the next holder may start at once.
            if self.lock is not None:
                self.lock.release()
