"""How many inflated bytes the request bodies in flight to all workers may hold together.
Pure: counts in, grants out (no I/O, no waiting).

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

So `slots * big + pool <= total` always. Each body has a `Share` (`grant()` as it inflates,
`release()` when its request has ended). Sizes are bytes.
"""

from __future__ import annotations

MIB = 1024 * 1024
#: A small body may inflate to this much from the shared pool.
SMALL = 16 * MIB
#: Pool bytes a body is granted first; each further grant doubles what it holds (few calls,
#: given back with the rest). Small: every body in flight holds at least this much of its
#: owners' `SMALL`, so one address holds at most SMALL / FIRST_GRANT bodies at once (256). It
#: was 1 MiB added at a time: the 17th small body in flight from one address (devices behind
#: one NAT) got 503 (bench measure 8: 56 of 424 syncs of 64 devices failed).
FIRST_GRANT = 64 * 1024


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

    def grant(self, inflated: int) -> int:
        """Room for the body to inflate to at least `inflated` bytes: the bytes granted, or
        `OverBudget`."""
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
        b = self._budget
        b.pool_held -= self._pooled
        b._add(b._pooled_by, self._owners, -self._pooled)
        self._pooled = 0
        if self._slot:
            b.slots_held -= 1
            b._add(b._slots_by, self._owners, -1)
            self._slot = False
