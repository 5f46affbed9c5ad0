"""The node's side of the cluster: its heartbeat, and where each account's requests go.

    Router.start() / close()       the heartbeat task (announce this node, refresh the node list)
    Router.route(sub) -> Serve | Forward
        places an unowned account on the least-loaded live node, takes over an account whose
        owner's lease ended (shared storage); raises `Unavailable` (503) while the owner is down
        (local storage, or shared before its lease ends) and `DirectoryUnavailable` (503) when the
        directory cannot answer. Never a 403: nothing here is the user's credentials.
    Router.forget(sub)             drop the cached owner (a forward failed; look again)

While the directory cannot answer, an owner read in the last `STALE_SECONDS` is still used
(stale-if-error), for accounts this node serves and for live owners it forwards to: nobody can
change an owner item meanwhile. In shared storage a node that cannot heartbeat for a whole lease
fences itself instead (`heartbeat`).

Owner lookups are cached for `cache_seconds` (a second by default), so a busy account costs one
directory read a second on each node, not one a request. The node list comes with each
heartbeat; a dead node's heartbeat expiry passes without it, so no refresh is needed to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable

from gateway import metrics
from gateway.cluster import placement
from gateway.cluster.directory import Directory, DirectoryUnavailable
from gateway.cluster.placement import Down, Forward, Node, Ownership, Place, Serve, TakeOver
from gateway.errors import Unavailable

log = logging.getLogger("gateway.cluster")

#: How long an owner read earlier is used while the directory cannot answer, in seconds.
STALE_SECONDS = 900.0
#: Attempts at a decision when other nodes keep changing the owner item meanwhile.
ROUNDS = 4


class NodeIdInUse(Exception):
    """Another live node announces this node's id from another URL: this one must not start."""


class Router:
    def __init__(
        self,
        directory: Directory,
        *,
        node_id: str,
        url: str,
        public_url: str = "",
        storage: str = placement.LOCAL,
        lease_seconds: float = 30.0,
        heartbeat_seconds: float = 5.0,
        load: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.storage = storage
        self._directory = directory
        self._url = url
        self._public_url = public_url
        self._lease = lease_seconds
        self._heartbeat = heartbeat_seconds
        self._load = load
        self._clock = clock
        self._cache_seconds = min(cache_seconds, heartbeat_seconds)
        self._nodes: dict[str, Node] = {}
        self._owners: dict[str, tuple[float, Ownership]] = {}
        self._task: asyncio.Task[None] | None = None
        self._blocked: set[str] = set()
        self._last_beat = clock()
        self._fenced = False
        #: Called once when this node's leases are lost (shared storage; `heartbeat`).
        self.on_fenced: Callable[[], None] = lambda: None
        self._nodes_read = float("-inf")  # last read for an unknown owner

    @property
    def nodes(self) -> dict[str, Node]:
        return dict(self._nodes)

    async def start(self) -> None:
        """Announce this node, then keep it announced in the background. A directory that
        cannot be reached does not stop the start: requests that need it get 503 until a
        heartbeat gets through (as the registry does, gateway/registry/).

        Raises `NodeIdInUse` while another node's heartbeat with this node's id and another
        URL lasts (a configuration copied without a new `cluster.node_id`: both would serve
        that id's accounts, each with its own worker)."""
        self._last_beat = self._clock()  # the lease counts from the start
        try:
            known = (await self._directory.nodes()).get(self.node_id)
        except DirectoryUnavailable:
            known = None  # the heartbeat retries; nothing to compare with now
        if known is not None and known.live(self._clock()) and known.url != self._url:
            log.error(
                "another live node uses this node's id: give each node its own cluster.node_id",
                extra={"node": self.node_id, "other_url": known.url},
            )
            raise NodeIdInUse(f"node id {self.node_id} is in use by {known.url}")
        await self.heartbeat()
        self._task = asyncio.create_task(self._beat_forever())

    async def close(self) -> None:
        """Stop heartbeating and announce this node's heartbeat as ended now (a clean stop):
        other nodes then treat it as down at once instead of after `lease_seconds`, so in
        shared storage its accounts are taken over by the next request for each (those it
        claimed within the last `lease_seconds` keep that claim's own expiry)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        ended = Node(self.node_id, self._url, self._public_url, 0, self._clock())
        try:
            await self._directory.announce(ended)
        except Exception as exc:  # noqa: BLE001 - then the lease runs out by itself
            log.warning("could not announce this node's stop", extra={"error": type(exc).__name__})
        await self._directory.close()

    async def beat(self) -> None:
        me = Node(
            self.node_id, self._url, self._public_url, self._load(), self._clock() + self._lease
        )
        self._nodes.setdefault(self.node_id, me)
        await self._directory.announce(me)
        self._last_beat = me.expires - self._lease
        self._fenced = False
        nodes = await self._directory.nodes()
        nodes[self.node_id] = me
        self._nodes = nodes

    async def heartbeat(self) -> None:
        """One heartbeat; a failure is logged and counted, never raised. In shared storage,
        a node whose heartbeats have failed for `lease_seconds` is *fenced*: other nodes may
        have taken its accounts over, so it calls `on_fenced` once (the app stops its
        workers, freeing their locks) and refuses its accounts (503) until a heartbeat gets
        through again.

        A beat that hangs (a directory that stops answering: boto3 waits out its timeouts and
        retries, 10 s and more) is given up when this node's lease ends, so the fence is not
        late: other nodes may take the accounts over from then on."""
        try:
            if self.storage == placement.SHARED and not self._fenced:
                left = self._last_beat + self._lease - self._clock()
                await asyncio.wait_for(self.beat(), timeout=max(left, 0.0))
            else:
                await self.beat()
        except Exception as exc:  # noqa: BLE001 - retried next period
            metrics.cluster_heartbeat_failed()
            log.warning("heartbeat failed", extra={"error": type(exc).__name__})
            if self._lost_leases() and not self._fenced:
                self._fenced = True
                log.error("heartbeats failing for the whole lease: this node stops its workers")
                self.on_fenced()

    def _lost_leases(self) -> bool:
        return self.storage == placement.SHARED and self._clock() - self._last_beat >= self._lease

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            await self.heartbeat()

    async def _refresh_nodes(self, now: float) -> None:
        """Read the node list again, at most once a second (unknown owners are rare)."""
        if now - self._nodes_read < 1.0:
            return
        self._nodes_read = now
        nodes = await self._directory.nodes()
        nodes[self.node_id] = self._nodes[self.node_id]
        self._nodes = nodes

    def _count_placement(self, node_id: str) -> None:
        """Until the next heartbeat shows it, count the account placed on `node_id` as load."""
        node = self._nodes.get(node_id)
        if node is not None:
            self._nodes[node_id] = dataclasses.replace(node, load=node.load + 1)

    def forget(self, sub: str) -> None:
        self._owners.pop(sub, None)

    def block(self, sub: str) -> None:
        """Answer 503 for `sub` on this node until `unblock` (its folder is being moved)."""
        self._blocked.add(sub)
        self.forget(sub)

    def unblock(self, sub: str) -> None:
        self._blocked.discard(sub)
        self.forget(sub)

    async def remote_owner(self, sub: str) -> Node | None:
        """The owner node of `sub` when it is another node (live or not); None when this node
        owns it or nobody does. Never places the account."""
        owner = await self._directory.owner(sub)
        if owner is None or owner.node == self.node_id:
            return None
        return self._nodes.get(owner.node)

    async def owner_id(self, sub: str) -> str | None:
        """The id of the node the directory names as `sub`'s owner right now (read afresh,
        never from this node's memory); None when nobody owns it."""
        owner = await self._directory.owner(sub)
        return None if owner is None else owner.node

    async def adopt(self, sub: str) -> bool:
        """Claim `sub` for this node if nobody owns it (a conditional write); False otherwise."""
        return await self._directory.claim(
            Ownership(sub, self.node_id, self._clock() + self._lease, 1), None
        )

    async def hand_over(self, sub: str, to: str) -> bool:
        """Make `to` the owner of an account this node owns (a conditional write); False when
        this node is not the owner (any more)."""
        owner = await self._directory.owner(sub)
        self.forget(sub)
        if owner is None or owner.node != self.node_id:
            return False
        new = Ownership(sub, to, self._clock() + self._lease, owner.version + 1)
        moved = await self._directory.claim(new, owner)
        if moved:
            metrics.cluster_ownership("moved")
        return moved

    async def route(self, sub: str) -> Serve | Forward:
        if sub in self._blocked:
            raise Unavailable("the account is moving to another node", retry_after=5)
        if self._lost_leases():
            raise Unavailable("this node lost contact with the cluster directory")
        for _ in range(ROUNDS):
            now = self._clock()
            cached = self._owners.get(sub)
            stale = False
            if cached is not None and now - cached[0] < self._cache_seconds:
                owner: Ownership | None = cached[1]
            else:
                try:
                    owner = await self._directory.owner(sub)
                except DirectoryUnavailable:
                    if cached is None or now - cached[0] > STALE_SECONDS:
                        raise
                    # Stale-if-error: while the directory cannot answer, no node can change
                    # the owner item either (every change is a conditional write there).
                    owner, stale = cached[1], True
            if owner is not None and owner.node not in self._nodes:
                # A node that joined since this node's last heartbeat: learn of it now.
                await self._refresh_nodes(now)
            decision = placement.decide(
                owner, self._nodes, self.node_id, now, self.storage, pick=_spread(sub)
            )
            if isinstance(decision, (Serve, Forward)):
                assert owner is not None
                if not stale:
                    self._owners[sub] = (now, owner)
                return decision
            if stale:
                raise DirectoryUnavailable("cluster directory unreachable")
            self._owners.pop(sub, None)
            if isinstance(decision, Down):
                raise Unavailable(
                    "the node that owns this account is not reachable",
                    retry_after=decision.retry_after,
                )
            if isinstance(decision, Place):
                won = await self._directory.claim(
                    Ownership(sub, decision.node, now + self._lease, 1), None
                )
                if won:
                    metrics.cluster_ownership("placed")
                    log.info("account placed", extra={"sub": sub, "node": decision.node})
                    self._count_placement(decision.node)
            elif isinstance(decision, TakeOver):
                assert owner is not None
                won = await self._directory.claim(
                    Ownership(sub, self.node_id, now + self._lease, owner.version + 1), owner
                )
                if won:
                    metrics.cluster_ownership("taken_over")
                    log.warning(
                        "account taken over: its owner's lease ended",
                        extra={"sub": sub, "from_node": owner.node},
                    )
            # Won or lost, read the owner item again: another node may have written first.
        raise Unavailable("the account's owner keeps changing", retry_after=1)


def _spread(sub: str) -> int:
    """A stable number per account, to break ties between equally loaded nodes."""
    return int.from_bytes(hashlib.sha256(sub.encode()).digest()[:4], "big")
