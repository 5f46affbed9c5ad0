"""Where one admitted request goes with several nodes: served here, sent on to its owner
node, or the client moved there (the proxy, gateway/proxy.py, asks once the request is
admitted, and again once its body is here).

    owner_of(cluster, sub, from_node) -> Node | None
        the node to forward to, or None when this node serves the account (or there is no
        cluster); `Misdirected` (503) for a request another node forwarded when this node is
        not the owner either, `Unavailable` (503) while the owner is down or the directory
        cannot answer (router.py). Counted in `cluster_route` ("here", "unavailable").
    redirect(owner, upstream_path) -> web.Response | None
        the protocol's own way to move a client (anki-sync-protocol.md): a 308 from
        `sync/meta` to the owner's public base URL, which the client keeps for every later
        request; None when the request is forwarded instead. Counted ("redirected",
        "forwarded").
    still_owner(cluster, sub)
        `Unavailable` (503, Retry-After 1) unless this node still owns `sub`.

Never a 403: nothing here is the user's credentials.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import metrics
from gateway.cluster.internal import Cluster, Misdirected
from gateway.cluster.placement import Forward, Node, Serve
from gateway.errors import Unavailable

# The proxy's logger: these lines are the proxy's decisions about one request.
log = logging.getLogger("gateway.proxy")


async def owner_of(cluster: Cluster | None, sub: str, from_node: bool) -> Node | None:
    """The node to forward to, or None when this node serves the account."""
    if cluster is None:
        return None
    try:
        decision = await cluster.router.route(sub)
    except Unavailable:
        metrics.cluster_route("unavailable")
        raise
    if not isinstance(decision, Forward):
        metrics.cluster_route("here")
        return None
    if from_node:
        raise Misdirected(f"the account belongs to node {decision.node.id}")
    return decision.node


def redirect(owner: Node, upstream_path: str) -> web.Response | None:
    """A 308 to the owner's public URL for `sync/meta` (module doc), else None (forwarded)."""
    if owner.public_url and upstream_path == "sync/meta":
        # The protocol's own way to move a client (anki-sync-protocol.md): a 308 from
        # sync/meta to a new base URL, which the client keeps for every later request.
        metrics.cluster_route("redirected")
        log.info("client moved to its owner node", extra={"node": owner.id})
        return web.Response(status=308, headers={"Location": owner.public_url})
    metrics.cluster_route("forwarded")
    return None


async def still_owner(cluster: Cluster | None, sub: str) -> None:
    """`Unavailable` (503) unless this node still owns `sub` (with several nodes). The owner
    was decided when the request's headers came; its body may have taken long enough for
    the account to move away (cluster/move.py waits only for requests on its worker), and
    a worker started now would serve a fresh, empty folder on a node that is no longer
    the owner."""
    if cluster is None:
        return
    if not isinstance(await cluster.router.route(sub), Serve):
        metrics.cluster_route("unavailable")
        raise Unavailable("the account moved to another node meanwhile", retry_after=1)
