"""How many inflated bytes the request bodies in flight to all workers may hold together.
Pure: counts in, grants out (no I/O, no waiting); safe to call from several threads (the
meters inflate in a thread pool, payload.py).

Why: each stock worker holds a body inflated in memory while it works on it (payload.py), so
however small each body is kept, enough of them at once add up. `workers.max_inflated_megs`
(`total` bytes) bounds their sum. Split so that concurrent large bodies cannot starve each
other (all growing at once, then all refused at the same point):

- a small body (up to `small` bytes inflated) takes what it inflates from a shared pool, a
  quarter of the total or more;
- a body growing past that, or finding the pool empty, takes one of `slots` places of `big`
  bytes (the most one body may inflate to) and from then on needs nothing more;
- with neither left, the body is refused (`OverBudget`, answered 503 "try again later");
- one owner (an account, a client address: whatever `share(owners)` names) holds at most
  `small` bytes of the pool and one place at a time, so one stranger's slow bodies cannot hold
  the budget every other account needs (found by trying: 29 slow bodies from one account on one
  address held all of it).

So `slots * big + pool <= total` always.

The small-body lane (issue 16, item 4: about 30 accounts, each holding a body that inflates
to 12 MiB and then trickles, filled the pool, and every other user's `sync/meta` got 503):
each account (the first of a share's owners) has `LANE_BODIES` places for bodies that
inflate to at most `LANE_BYTES`; such a body takes nothing from the pool or the slots, so
no number of other accounts can refuse it. A body growing past `LANE_BYTES` leaves its place
and takes from the pool as above. `LANE_BYTES` is sized for the largest body a stock client
sends in a normal sync: `sync/meta` is about 100 bytes, but a media zip (rslib
sync/media/mod.rs `MEDIA_SYNC_TARGET_ZIP_BYTES`) takes files until it holds 2.5 MiB, so
with the file that crosses the target it is up to 2.5 MiB plus one file (a lane of 1 MiB
sent an honest sync of two 1.2 MB photos to the pool, where other accounts' slow bodies
could get it 503). 4 MiB holds any zip whose last file is at most 1.5 MiB (photos, audio
clips), and collection chunks (`applyChunk`, `applyChanges`: at most 250 objects) of
notes up to about 16 KiB each. Larger bodies (a zip with a larger file, a full upload) use
the shared budget as above. Anki syncs a collection and its media at once: two bodies.
Lane bodies are bounded per account, and only accounts with a worker hold a body in a
worker (`workers.max_workers`): all workers together hold at most
`total + max_workers * LANE_BODIES * LANE_BYTES` inflated bytes (400 MiB of lanes at the
default 50 workers).

Each body has a `Share` (`grant()` as it inflates, `release()` when its request has ended;
no grant after that). Sizes are bytes.
"""

from __future__ import annotations

import threading

MIB = 1024 * 1024
#: A small body may inflate to this much from the shared pool.
SMALL = 16 * MIB
#: Pool bytes a body is granted first; each further grant doubles what it holds (few calls,
#: given back with the rest). Small: every body in flight holds at least this much of its
#: owners' `SMALL`, so one address holds at most SMALL / FIRST_GRANT bodies at once (256). It
#: was 1 MiB added at a time: the 17th small body in flight from one address (devices behind
#: one NAT) got 503 (bench measure 8: 56 of 424 syncs of 64 devices failed).
FIRST_GRANT = 64 * 1024
#: The small-body lane (module doc): places per account, and the most a lane body inflates to.
LANE_BODIES = 2
LANE_BYTES = 4 * MIB


class OverBudget(Exception):
    """The bodies in flight together would inflate past the budget with this one."""


class InflationBudget:
    def __init__(self, total: int, big: int) -> None:
        self.slots = (total * 3 // 4) // big
        if self.slots < 1:
            raise ValueError("the budget must hold one largest body in three quarters of it")
        self.big = big
        self.pool = total - self.slots * big
        self.small = min(SMALL, self.pool)
        self.pool_held = 0
        self.slots_held = 0
        self._pooled_by: dict[str, int] = {}
        self._slots_by: dict[str, int] = {}
        self._lane_by: dict[str, int] = {}
        self.lock = threading.Lock()

    def share(self, owners: tuple[str, ...] = ()) -> Share:
        return Share(self, owners)

    def _add(self, counts: dict[str, int], owners: tuple[str, ...], n: int) -> None:
        for owner in owners:
            left = counts.get(owner, 0) + n
            if left:
                counts[owner] = left
            else:
                counts.pop(owner, None)


class Share:
    """One body's part of the budget."""

    def __init__(self, budget: InflationBudget, owners: tuple[str, ...] = ()) -> None:
        self._budget = budget
        self._owners = owners
        self._pooled = 0
        self._slot = False
        self._closed = False
        self._lane = ""  # the account whose lane place this body holds
        lane = owners[:1]
        with budget.lock:
            if lane and budget._lane_by.get(lane[0], 0) < LANE_BODIES:
                budget._add(budget._lane_by, lane, 1)
                self._lane = lane[0]

    def grant(self, inflated: int) -> int:
        """Room for the body to inflate to at least `inflated` bytes: the bytes granted, or
        `OverBudget`."""
        with self._budget.lock:
            if self._closed:
                raise OverBudget("the request has ended")
            if self._lane and inflated <= LANE_BYTES:
                return LANE_BYTES
            self._leave_lane()
            return self._grant(inflated)

    def _leave_lane(self) -> None:
        if self._lane:
            self._budget._add(self._budget._lane_by, (self._lane,), -1)
            self._lane = ""

    def _grant(self, inflated: int) -> int:
        b = self._budget
        if self._slot:
            return b.big
        if inflated <= b.small:
            room = b.pool - b.pool_held
            # What this body's owners may still take from the pool.
            room = min([room] + [b.small - b._pooled_by.get(o, 0) for o in self._owners])
            want = min(b.small, max(inflated, 2 * self._pooled, FIRST_GRANT))
            if want - self._pooled > room:
                want = inflated
            if want - self._pooled <= room:
                b.pool_held += want - self._pooled
                b._add(b._pooled_by, self._owners, want - self._pooled)
                self._pooled = want
                return want
        if b.slots_held < b.slots and not any(b._slots_by.get(o) for o in self._owners):
            b.slots_held += 1
            b._add(b._slots_by, self._owners, 1)
            self._slot = True
            b.pool_held -= self._pooled
            b._add(b._pooled_by, self._owners, -self._pooled)
            self._pooled = 0
            return b.big
        raise OverBudget(f"no room for {inflated} more inflated bytes")

    def release(self) -> None:
        """Gives everything back (the body's request has ended); idempotent."""
        with self._budget.lock:
            self._closed = True
            self._leave_lane()
            self._release()

    def _release(self) -> None:
        b = self._budget
        b.pool_held -= self._pooled
        b._add(b._pooled_by, self._owners, -self._pooled)
        self._pooled = 0
        if self._slot:
            b.slots_held -= 1
            b._add(b._slots_by, self._owners, -1)
            self._slot = False
