"""Placement: which node serves an account, decided from the directory's view. Pure.

    Node        a heartbeat item: id, internal URL, public URL, load (live workers), expiry
    Ownership   an owner item: sub → node, the ownership lease's end, a version for
                conditional writes (every change writes version + 1 where the old one stood)
    decide(owner, nodes, me, now, storage) -> Serve | Forward | Place | TakeOver | Down

An ownership lease lasts while the owner node's heartbeat does (each heartbeat renews all of a
node's leases with one write) and at least until the owner item's own `expires` (set when it
was written, so a node that has just claimed an account keeps it even before its next
heartbeat). Times are Unix seconds (float), the same clock on every node within
`cluster.max_clock_skew_seconds`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LOCAL = "local"
SHARED = "shared"


@dataclass(frozen=True)
class Node:
    id: str
    #: Where other nodes reach it (ends in "/", includes the path prefix).
    url: str
    #: Where clients may reach it directly ("" when not configured).
    public_url: str
    #: Live workers when it last announced itself.
    load: int
    #: Its heartbeat's end (Unix seconds).
    expires: float

    def live(self, now: float) -> bool:
        return self.expires > now


@dataclass(frozen=True)
class Ownership:
    sub: str
    node: str
    expires: float
    version: int

    def lease_end(self, nodes: Mapping[str, Node]) -> float:
        """When another node may take the account over (shared storage)."""
        owner = nodes.get(self.node)
        return max(self.expires, owner.expires if owner is not None else 0.0)


@dataclass(frozen=True)
class Serve:
    """This node owns the account: its own worker serves."""


@dataclass(frozen=True)
class Forward:
    node: Node


@dataclass(frozen=True)
class Place:
    """Nobody owns the account: write `node` as its owner (if nobody did meanwhile)."""

    node: str


@dataclass(frozen=True)
class TakeOver:
    """The owner's lease ended (shared storage): claim the account for this node."""


@dataclass(frozen=True)
class Down:
    """The owner is not reachable and nobody may take over (yet): 503 for this account."""

    #: Seconds until the situation may change (a takeover becomes possible), at least 1.
    retry_after: int


Decision = Serve | Forward | Place | TakeOver | Down


def least_loaded(nodes: Iterable[Node], now: float, fallback: str, pick: int = 0) -> str:
    """The live node with the fewest live workers; `fallback` if none is live. Ties are broken
    by `pick` (any integer, e.g. from a hash of the account), so accounts that arrive together,
    before the next heartbeat shows the new load, spread over the tied nodes."""
    live = [n for n in nodes if n.live(now)]
    if not live:
        return fallback
    lowest = min(n.load for n in live)
    tied = sorted(n.id for n in live if n.load == lowest)
    return tied[pick % len(tied)]


def decide(
    owner: Ownership | None,
    nodes: Mapping[str, Node],
    me: str,
    now: float,
    storage: str,
    *,
    pick: int = 0,
    down_retry: int = 5,
) -> Decision:
    if owner is None:
        return Place(least_loaded(nodes.values(), now, fallback=me, pick=pick))
    if owner.node == me:
        return Serve()
    node = nodes.get(owner.node)
    if node is not None and node.live(now):
        return Forward(node)
    if storage != SHARED:
        # Its collection is on that node's disk: nobody else may serve it.
        return Down(down_retry)
    end = owner.lease_end(nodes)
    if end <= now:
        return TakeOver()
    return Down(max(1, int(end - now + 0.999)))
