"""The worker pool: one stock sync server per active account, started on demand, bounded.

Contract (design.md, "Workers"):
- `lease(account)` yields a `Worker` (its loopback port) and counts the request as in flight
  until the block exits. The first lease starts the worker; concurrent leases for an account
  whose worker is starting wait for that one start. A worker whose process died is replaced.
- At most `max_workers` worker processes exist (starting, running or still stopping). When full,
  the least recently used idle worker is stopped to make room; when every worker is busy, the
  lease waits up to `queue_timeout`, then raises `Unavailable` (503, `Retry-After`).
- The reaper (`start()`) stops workers idle for longer than `idle_timeout` and forgets dead ones.
- `report_broken(account)`: the proxy could not talk to the worker; a dead or unhealthy worker
  is stopped and forgotten, so the next lease starts a fresh one. It returns the worker's
  `Death` when it died (waiting briefly for the exit: a broken connection can arrive first).
  `retire(account)` stops a healthy one too (its account's password changed, a backup wants
  it); `running()` lists ours.
- Every worker found dead that nobody stopped is logged (WARNING "worker killed at its memory
  limit" or "worker crashed", with the reason) and counted once (`metrics.worker_died`); so is
  one killed before it was ready (`WorkerKilledStarting`, 503, logged with `starting`).
- Across processes, one worker per account (slot.py, lock.py): if another gateway holds the
  account, its worker is used (not counted here) instead of starting a second one; once it
  answered /health it is trusted for `BORROW_SECONDS` while its lock still names it (a lease
  then costs two small file reads, no round trip), and forgotten when reported broken.
- `on_stopped(account)`, when set, is called as a worker of ours is discarded, whatever the
  reason (retired, evicted, idle, dead, closing): state the worker held for a client (a
  collection sync half-way) is gone from then on (syncsession/guard.py).
- Errors: `ValueError` (unsafe account name), `Unavailable` (`WorkerKilledStarting` among
  them), `WorkerFailed`, `WorkerTimeout`.
- `close()` stops every worker concurrently (SIGINT first) and releases the locks; idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from gateway import metrics
from gateway.config import Config
from gateway.errors import Unavailable
from gateway.naming import is_safe
from gateway.workers import ledger
from gateway.workers.containment import Containment, Death
from gateway.workers.ledger import Usage
from gateway.workers.lock import Holder, still_published
from gateway.workers.process import WorkerKilledStarting, probe_health
from gateway.workers.slot import Launch, Slot

log = logging.getLogger("gateway.workers")

#: Seconds a client is told to wait when no worker slot is free.
RETRY_AFTER = 5
#: Seconds another gateway process's worker is used without asking its /health again.
BORROW_SECONDS = 1.0
#: Seconds `report_broken` waits for a worker's exit after a broken connection.
EXIT_WAIT = 1.0


@dataclass(frozen=True)
class Worker:
    account: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class WorkerPool:
    def __init__(
        self,
        *,
        command: Sequence[str],
        collections_dir: Path,
        secret_for: Callable[[str], Awaitable[str]],
        max_workers: int = 50,
        idle_timeout: float = 300,
        start_timeout: float = 15,
        queue_timeout: float = 10,
        max_payload_megs: int = 100,
        containment: Containment | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not command or max_workers < 1:
            raise ValueError("a worker command and max_workers >= 1 are required")
        self._launch = Launch(
            command=tuple(command),
            collections_dir=collections_dir,
            secret_for=secret_for,
            max_payload_megs=max_payload_megs,
            start_timeout=start_timeout,
            containment=containment,
        )
        self._max_workers = max_workers
        self._idle_timeout = idle_timeout
        self._queue_timeout = queue_timeout
        self._clock = clock
        self._slots: dict[str, Slot] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        #: Other gateway processes' workers that answered /health: account -> (holder, when).
        self._borrowed: LRUCache[str, tuple[Holder, float]] = LRUCache(4096)
        # Replaced on every change; waiters hold the old one (no lost wake-ups, no Condition).
        self._changed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        #: Called with the account whenever one of our workers is discarded (module doc).
        self.on_stopped: Callable[[str], None] | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        secret_for: Callable[[str], Awaitable[str]],
        containment: Containment | None = None,
    ) -> WorkerPool:
        w = config.workers
        return cls(
            command=config.worker_command(),
            collections_dir=config.collections_dir,
            secret_for=secret_for,
            max_workers=w.max_workers,
            idle_timeout=w.idle_timeout_seconds,
            start_timeout=w.start_timeout_seconds,
            queue_timeout=w.queue_timeout_seconds,
            max_payload_megs=w.max_payload_megs,
            containment=containment,
        )

    async def start(self) -> None:
        if self._reaper is None and not self._closed:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait([self._reaper])
        for slot in list(self._slots.values()):
            self._discard(slot, "gateway closing")
        if self._stopping:
            await asyncio.wait(list(self._stopping.values()))

    @property
    def collections_dir(self) -> Path:
        return self._launch.collections_dir

    def stats(self) -> dict[str, int]:
        # list() copies in one step: tests and metrics may call this from another thread.
        counts = ledger.counts([s.usage for s in list(self._slots.values())])
        counts["live"] += len(self._stopping)
        return {**counts, "max": self._max_workers}

    def lease(self, account: str) -> _Lease:
        """`async with pool.lease(account) as worker:` the account's worker, held in flight
        until the block ends."""
        return _Lease(self, account)

    def _let_go(self, slot: Slot) -> None:
        slot.usage.end(self._clock())
        if slot.usage.in_flight == 0:
            self._notify()

    def running(self) -> list[str]:
        """Accounts whose worker this pool started and that still runs (not starting ones, not
        another gateway process's)."""
        return [a for a, s in self._slots.items() if s.process is not None and s.process.alive]

    async def report_broken(self, account: str) -> Death | None:
        self._borrowed.pop(account, None)
        slot = self._slots.get(account)
        if slot is None or slot.process is None:
            return None  # starting, unknown, or another gateway's worker: nothing to fix
        process = slot.process
        if await process.exited(EXIT_WAIT):
            return self._bury(slot)
        # One failed request is not proof: pooled keep-alive connections to the stock server
        # fail now and then (anki-sync-protocol.md). Only a worker that fails /health goes.
        if await probe_health(process.port, timeout=2.0):
            log.info("worker reported broken but healthy", extra={"account": account})
            return None
        if not process.alive:
            return self._bury(slot)
        self._discard(slot, "reported broken and not healthy")
        return None

    def in_flight(self, account: str) -> int:
        """Requests this gateway has on `account`'s worker right now."""
        slot = self._slots.get(account)
        return 0 if slot is None else slot.usage.in_flight

    def retire(self, account: str, why: str) -> None:
        """Stop this gateway's worker for `account`, if it has one, so the next lease starts a
        fresh one. A worker reads its account's password (and so its key generation) once, at
        start: after "sign out all devices" the old worker would refuse the new password.
        Requests still in flight on it fail (5xx); the account's keys are refused anyway."""
        slot = self._slots.get(account)
        if slot is not None and slot.process is not None:
            self._discard(slot, why)

    def retire_all(self, why: str) -> None:
        """Stop every worker of this gateway (`retire` for each)."""
        for slot in list(self._slots.values()):
            if slot.process is not None:
                self._discard(slot, why)

    async def stop(self, account: str) -> None:
        """Stop this gateway's worker for `account` and wait until it has exited (its lock is
        released), e.g. before the account's folder is removed."""
        self.retire(account, "account removed")
        stopping = self._stopping.get(account)
        if stopping is not None:
            await asyncio.wait([stopping])

    # -- internals -------------------------------------------------------------------------

    async def _acquire(self, account: str) -> tuple[Slot, Worker]:
        if not is_safe(account):
            raise ValueError(f"unsafe account name {account!r}")
        deadline = asyncio.get_running_loop().time() + self._queue_timeout
        while True:
            if self._closed:
                raise Unavailable("worker pool is closed", retry_after=RETRY_AFTER)
            slot = self._slots.get(account)
            if slot is None:
                borrowed = self._borrowed_now(account)
                if borrowed is not None:
                    return borrowed
                stopping = self._stopping.get(account)
                if stopping is not None:
                    # Its lock is still held: the new worker may only start after the old one.
                    await asyncio.wait([stopping])
                    continue
                if not self._has_room():
                    waited = asyncio.get_running_loop().time()
                    try:
                        await self._wait_for_change(deadline)
                    finally:
                        metrics.queue_wait(asyncio.get_running_loop().time() - waited)
                    continue
                slot = self._open(account)
            assert slot.start is not None
            slot.usage.begin(self._clock())
            try:
                worker = Worker(account, await asyncio.shield(slot.start))
            except BaseException as exc:
                slot.usage.end(self._clock())
                self._notify()
                if isinstance(exc, asyncio.CancelledError) and slot.start.cancelled():
                    raise Unavailable("worker start abandoned", retry_after=RETRY_AFTER) from None
                raise
            if not slot.dead:
                return slot, worker
            slot.usage.end(self._clock())
            self._bury(slot)

    def _borrowed_now(self, account: str) -> tuple[Slot, Worker] | None:
        """Another gateway process's worker for `account`, if it answered /health within
        `BORROW_SECONDS` and its lock still names it (module doc): one small file read, and
        neither a start task nor a slot kept (it is not ours to count: issue 18, a request
        through a process that does not run the account's worker cost a task and a slot)."""
        entry = self._borrowed.get(account)
        if entry is None or time.monotonic() - entry[1] >= BORROW_SECONDS:
            return None
        holder = entry[0]
        if not still_published(self._launch.collections_dir, account, holder):
            return None
        slot = Slot(Usage(account, last_used=self._clock()))
        slot.holder = holder
        slot.usage.begin(self._clock())
        return slot, Worker(account, holder.port)

    def _has_room(self) -> bool:
        if len(self._slots) + len(self._stopping) < self._max_workers:
            return True
        victim = ledger.least_recently_used_idle(s.usage for s in self._slots.values())
        if victim is not None:
            # Its stop frees the slot and wakes us; counting it until then keeps the bound.
            self._discard(self._slots[victim.account], "evicted: pool full")
            metrics.worker_evicted()
        return False

    async def _wait_for_change(self, deadline: float) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            await asyncio.wait_for(self._changed.wait(), remaining)
        except asyncio.TimeoutError:
            metrics.worker_unavailable()
            raise Unavailable(
                f"all {self._max_workers} workers are busy", retry_after=RETRY_AFTER
            ) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _open(self, account: str) -> Slot:
        slot = Slot(Usage(account, last_used=self._clock()))
        self._slots[account] = slot
        slot.start = asyncio.create_task(self._start(slot))
        # Every waiting lease may have been cancelled: the outcome must still be retrieved.
        slot.start.add_done_callback(lambda t: t.cancelled() or t.exception())
        return slot

    async def _start(self, slot: Slot) -> int:
        borrowed = self._borrowed.get(slot.account)
        now = time.monotonic()
        trusted = (
            borrowed[0] if borrowed is not None and now - borrowed[1] < BORROW_SECONDS else None
        )
        try:
            port = await slot.bring_up(self._launch, trusted)
        except BaseException as exc:
            self._borrowed.pop(slot.account, None)
            self._forget(slot)
            if isinstance(exc, WorkerKilledStarting):
                self._count_death(slot.account, None, exc.death)
            raise
        if slot.process is None:
            if slot.holder is not None and slot.holder != trusted:
                self._borrowed[slot.account] = (slot.holder, now)  # it answered /health now
            self._forget(slot)  # another gateway's worker: not ours to count or stop
        else:
            slot.usage.ready = True
            slot.usage.last_used = self._clock()
            self._notify()
        return port

    def _forget(self, slot: Slot) -> None:
        if self._slots.get(slot.account) is slot:
            del self._slots[slot.account]
            self._notify()

    def _discard(self, slot: Slot, why: str) -> None:
        """Forget `slot` now and stop its worker in the background (tracked in `_stopping`)."""
        account = slot.account
        if self._slots.get(account) is not slot:
            return
        del self._slots[account]
        log.info("stopping worker: %s", why, extra={"account": account})
        if self.on_stopped is not None:
            self.on_stopped(account)
        task = asyncio.create_task(self._stop(slot))
        self._stopping[account] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._stopping.get(account) is task:
                del self._stopping[account]
            self._notify()

        task.add_done_callback(done)

    def _bury(self, slot: Slot) -> Death | None:
        """Forget a worker that exited on its own, once: log and count why (module doc)."""
        if self._slots.get(slot.account) is not slot or slot.process is None:
            return None  # already buried by another caller
        process = slot.process
        death = process.death()
        if death is not None:
            self._count_death(slot.account, process.pid, death)
        self._discard(slot, f"process exited with {process.returncode}")
        return death

    def _count_death(self, account: str, pid: int | None, death: Death) -> None:
        """Log and count a worker that exited on its own (`pid` None: before it was ready)."""
        metrics.worker_died(death.reason)
        killed = death.reason == "memory"
        message = "worker killed at its memory limit" if killed else "worker crashed"
        extra: dict[str, object] = {"account": account, "pid": pid, "reason": death.detail}
        if pid is None:
            extra["starting"] = True
        if killed and self._launch.containment is not None:
            limits = self._launch.containment.limits
            extra["limit_megs"] = limits.memory_bytes // (1024 * 1024)
            extra["mode"] = self._launch.containment.mode
        log.warning(message, extra=extra)

    async def _stop(self, slot: Slot) -> None:
        try:
            await slot.shut_down()
        except Exception:
            log.exception("stopping worker failed", extra={"account": slot.account})

    async def _reap_forever(self) -> None:
        period = ledger.reap_period(self._idle_timeout)
        while True:
            await asyncio.sleep(period)
            try:
                await self._reap()
            except Exception:
                log.exception("worker reaper failed; retrying next period")

    async def _reap(self) -> None:
        slots = list(self._slots.values())
        now = self._clock()
        for usage in ledger.idle_past([s.usage for s in slots], now, self._idle_timeout):
            self._discard(self._slots[usage.account], "idle")
        for slot in slots:
            if slot.dead:
                self._bury(slot)
            elif slot.secret is not None and not await self._current(slot):
                # Signed out everywhere, maybe through another gateway process that cannot stop
                # this worker itself: its logins fail until this one makes way.
                self._discard(slot, "its account's key generation changed")

    async def _current(self, slot: Slot) -> bool:
        try:
            return slot.secret == await self._launch.secret_for(slot.account)
        except Exception:  # noqa: BLE001 - the registry may be briefly busy: keep the worker
            return True


class _Lease:
    """`WorkerPool.lease()`: a class, not a generator (cheaper on every request, issue 18)."""

    __slots__ = ("_pool", "_account", "_slot")

    def __init__(self, pool: WorkerPool, account: str) -> None:
        self._pool = pool
        self._account = account
        self._slot: Slot | None = None

    async def __aenter__(self) -> Worker:
        self._slot, worker = await self._pool._acquire(self._account)
        return worker

    async def __aexit__(self, *exc: object) -> None:
        if self._slot is not None:
            slot, self._slot = self._slot, None
            self._pool._let_go(slot)
