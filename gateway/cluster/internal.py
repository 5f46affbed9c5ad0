"""Node-to-node requests: the route other nodes forward to, and the calls this node makes.

    <prefix>_cluster/sync/<method>, _cluster/msync/<method>
        a client's sync request forwarded by the node it reached. Signed (signing.py) over the
        method, this path, the time and the request's host key; served by this node's own worker
        when this node owns the account, and never forwarded again (`Misdirected` instead).
    POST <prefix>_cluster/hostkey   {"sub": ...} → {"key": ...}
        a login that reached another node: the owner's worker logs the account in (the key is
        the worker's own, as for a local login); signed over the sub.

A refusal (missing, forged or stale signature: 401; not the owner here: 503) carries the
`X-Gateway-Node-Refused` header, logs the reason and the caller's address (never a header's
value), and closes the connection. The sending node turns any refusal into a 503 for its
client: a 401 or 403 from a node must never reach Anki, which logs the user out on 403.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway import metrics, protocol
from gateway.cluster import signing
from gateway.cluster.placement import Forward, Node
from gateway.cluster.router import Router
from gateway.errors import BadRequest, Unavailable
from gateway.nonce import nonce
from gateway.registry.base import Registry
from gateway.web.bodies import read_capped

log = logging.getLogger("gateway.cluster")

#: The internal routes' segment under the path prefix.
SEGMENT = "_cluster/"
#: The client's address, as the forwarding node saw it (trusted only on a signed request).
CLIENT = "X-Gateway-Node-Client"
#: Headers only nodes may set: dropped from whatever a client sends.
NODE_HEADERS = frozenset(h.lower() for h in (*signing.HEADERS, signing.REFUSED, CLIENT))
#: signing.problem()'s reasons as metric labels; anything else is "malformed".
_REFUSAL_LABELS = {
    "not signed": "unsigned",
    "malformed time": "malformed",
    "time outside the replay window": "outside_window",
    "bad signature": "bad_signature",
    "archive differs from the signed one": "bad_signature",
    "signature already used (replay)": "replayed",
}
#: Seconds a client is told to wait after a forward failed.
RETRY_AFTER = 5
#: The client's address on a request that arrived signed from another node.
FORWARDED_FOR: web.RequestKey[str] = web.RequestKey("forwarded_for", str)


class Misdirected(Unavailable):
    """A forwarded request reached a node that does not own the account (the sender's view was
    stale): the sender answers 503 and looks again; nothing is forwarded twice."""


@dataclass
class Cluster:
    """What the app holds when `cluster.node_id` is set."""

    router: Router
    key: bytes
    max_skew: float
    session: aiohttp.ClientSession
    clock: Callable[[], float] = time.time

    def sign(self, method: str, url: str, identity: str) -> dict[str, str]:
        path = urlsplit(url).path
        return signing.sign(self.key, method, path, self.router.node_id, identity, self.clock())

    def problem(self, request: web.Request, identity: str) -> str | None:
        headers = {h: request.headers.get(h) for h in signing.HEADERS}
        return signing.problem(
            self.key, request.method, request.path, identity, headers, self.clock(), self.max_skew
        )

    async def first_use(self, request: web.Request, purpose: str, registry: Registry) -> bool:
        """Spend the signature of a request `problem()` passed, once: False if it was spent
        before (a replay), by any node or before a restart (the registry keeps it until its
        time leaves the replay window). Only verified signatures reach this."""
        signature = request.headers.get(signing.SIGNATURE, "")
        until = int(request.headers.get(signing.TIME, "0")) + self.max_skew + 1
        spent = nonce(purpose, signature, until)
        return await registry.spend_nonce(spent.key, spent.until)

    def refuse(self, request: web.Request, reason: str) -> web.Response:
        metrics.cluster_refused(_REFUSAL_LABELS.get(reason, "malformed"))
        log.warning(
            "node-to-node request refused", extra={"reason": reason, "address": request.remote}
        )
        answer = web.Response(status=401, text="not a node request", headers={signing.REFUSED: "1"})
        answer.force_close()
        return answer

    def target(self, node: Node, upstream_path: str) -> str:
        return node.url + SEGMENT + upstream_path

    async def remote_key(self, sub: str, header: protocol.SyncHeader) -> str | None:
        """The host key from the owner node's worker, or None when this node owns `sub`."""
        decision = await self.router.route(sub)
        if not isinstance(decision, Forward):
            return None
        url = decision.node.url + SEGMENT + "hostkey"
        headers = self.sign("POST", url, signing.identity_of(sub))
        headers[protocol.SYNC_HEADER] = header.for_upstream("")
        try:
            async with self.session.post(url, json={"sub": sub}, headers=headers) as answer:
                body = await answer.read()
                status, refused = answer.status, signing.REFUSED in answer.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.router.forget(sub)
            raise Unavailable(
                f"owner node {decision.node.id} unreachable: {type(exc).__name__}",
                retry_after=RETRY_AFTER,
            ) from None
        if status != 200 or refused:
            self.router.forget(sub)
            raise Unavailable(
                f"owner node {decision.node.id} answered the login with {status}",
                retry_after=RETRY_AFTER,
            )
        try:
            key = json.loads(body)["key"]
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable("owner node answered the login oddly") from exc
        if not isinstance(key, str) or not key:
            raise Unavailable("owner node answered the login oddly")
        return key


CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster", Cluster)


def misdirected_answer(exc: Misdirected) -> web.Response:
    metrics.cluster_refused("not_owner")
    answer = web.Response(
        status=503,
        text="not the owner",
        headers={signing.REFUSED: "1", "Retry-After": "1"},
    )
    answer.force_close()
    log.info("forwarded request refused: not the owner here", extra={"reason": exc.detail})
    return answer


async def sync(request: web.Request, forward: Any) -> web.StreamResponse:
    """A forwarded sync request; `forward(request, upstream_path)` is the proxy's, told that the
    request came from a node (it serves locally or raises `Misdirected`)."""
    cluster = request.app[CLUSTER]
    raw = request.headers.get(protocol.SYNC_HEADER)
    key = ""
    try:
        key = protocol.parse_sync_header(raw).key
    except Exception:  # noqa: BLE001 - an unsigned request learns nothing from the reason
        return cluster.refuse(request, "no valid anki-sync header")
    reason = cluster.problem(request, signing.identity_of(key))
    if reason is not None:
        return cluster.refuse(request, reason)
    request[FORWARDED_FOR] = request.headers.get(CLIENT) or request.remote or "unknown"
    kind, method = request.match_info["kind"], request.match_info["method"]
    try:
        return await forward(request, f"{kind}/{method}")
    except Misdirected as exc:
        return misdirected_answer(exc)


async def host_key(request: web.Request, key_for: Any) -> web.StreamResponse:
    """A login forwarded by another node; `key_for(sub, header)` is the login service's."""
    cluster = request.app[CLUSTER]
    try:
        header = protocol.parse_sync_header(request.headers.get(protocol.SYNC_HEADER))
        data = json.loads(await read_capped(request, 4096))
        sub = data["sub"]
        if not isinstance(sub, str) or not sub:
            raise BadRequest("sub")
    except Exception:  # noqa: BLE001 - as above
        return cluster.refuse(request, "malformed internal login")
    reason = cluster.problem(request, signing.identity_of(sub))
    if reason is not None:
        return cluster.refuse(request, reason)
    decision = await cluster.router.route(sub)
    if isinstance(decision, Forward):
        return misdirected_answer(Misdirected(f"login for an account of node {decision.node.id}"))
    try:
        return web.json_response({"key": await key_for(sub, header)})
    except Misdirected as exc:
        return misdirected_answer(exc)


def forwarding_headers(
    cluster: Cluster, method: str, url: str, host_key: str, client: str
) -> Mapping[str, str]:
    headers = cluster.sign(method, url, signing.identity_of(host_key))
    headers[CLIENT] = client
    return headers
