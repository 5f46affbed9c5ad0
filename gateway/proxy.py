"""The reverse proxy for `sync/*` and `msync/*`: the entry of every proxied request, which walks
it down the layers, one decision in each module:

    admit      auth/admission.py: the host key in the `anki-sync` header -> the account
               (revoked keys refused on every method)
    route      cluster/owner.py: served here, sent on to the owner node, or the client moved
               there with a 308 (only with several nodes)
    body       forwarding/body.py: the quota check, the meter, the body read whole (in memory
               or spooled), and the answer to a body that breaks a rule
    gate/turn  backup/gate.py: past a backup of the account; then workers/syncsession/: one
               collection sync per account (a request of the live sync holds it from its
               arrival)
    send       forwarding/upstream.py: to the account's worker (workers/pool.py) or the owner
               node, the answer streamed back
    deliver    forwarding/delivery.py: the rest of the answer to the client, at its pace,
               once the worker, the turn and the gate are let go

Request bodies come whole before a worker is taken (forwarding/body.py): a body still arriving
holds no worker, no worker slot and no backup. The sync session is decided once the body is
here, after the backup gate, which is passed only then, so a sync cut while its body arrived
does not reach the fresh worker. The owner is asked again once the body is here
(`still_owner`): the account may have moved meanwhile.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import protocol
from gateway.appkeys import ACCOUNT, CONFIG
from gateway.auth.admission import Admission
from gateway.backup.gate import BackupGate, Passage
from gateway.cluster.internal import FORWARDED_FOR, Cluster
from gateway.cluster.owner import owner_of, redirect, still_owner
from gateway.cluster.placement import Node
from gateway.errors import BodyTooLarge, Overloaded, QuotaReached, UnreadableBody
from gateway.forwarding.body import BodyPolicy
from gateway.forwarding.delivery import delivering
from gateway.forwarding.upstream import MAX_ANSWERS_ON_DISK, Upstream
from gateway.quota import OverQuota, QuotaGuard
from gateway.quota.guard import MediaCheck
from gateway.uploads import payload
from gateway.web.middlewares import client_address
from gateway.web.spool import SpooledBody
from gateway.workers.pool import WorkerPool
from gateway.workers.syncsession import SessionGuard, Turn


class Proxy:
    def __init__(
        self,
        admission: Admission,
        pool: WorkerPool,
        upstream: aiohttp.ClientSession,
        reused: aiohttp.ClientSession | None = None,
        limits: payload.PayloadLimits | None = None,
        budget: payload.InflationBudget | None = None,
        gate: BackupGate | None = None,
        cluster: Cluster | None = None,
        sessions: SessionGuard | None = None,
        quota: QuotaGuard | None = None,
        spool_dir: Path | None = None,
        max_answers_on_disk: int = MAX_ANSWERS_ON_DISK,
    ) -> None:
        self._sessions = sessions
        self._gate = gate
        self._cluster = cluster
        self._admission = admission
        self._bodies = BodyPolicy(limits, budget, quota, spool_dir)
        self._upstream = Upstream(
            pool, upstream, reused, cluster, spool_dir, max_on_disk=max_answers_on_disk
        )

    def close(self) -> None:
        """Closes the idle connections to workers (forwarding/wire.py)."""
        self._upstream.close()

    async def forward(
        self, request: web.Request, upstream_path: str, *, from_node: bool = False
    ) -> web.StreamResponse:
        """Serve one sync request. `from_node`: it came signed from another node (cluster/
        internal.py), which saw the client's address; it is never forwarded again."""
        # Once the worker and everything held with it are let go, the client's side of the
        # answer goes on to its end (forwarding/delivery.py).
        async with delivering(request):
            response = await self._serve(request, upstream_path, from_node)
        return response

    async def _serve(
        self, request: web.Request, upstream_path: str, from_node: bool
    ) -> web.StreamResponse:
        header = protocol.parse_sync_header(request.headers.get(protocol.SYNC_HEADER))
        if request.query_string:  # (stock clients send none: no query parsed for them)
            protocol.check_query_keys(request.query.getall("k", ()), header.key)
        # A request forwarded by another node: the client's address as that node saw it.
        address = request.get(FORWARDED_FOR) or client_address(
            request, request.app[CONFIG].server.trust_forwarded_for
        )
        account = await self._admission.admit(header.key, address)
        request[ACCOUNT] = account.name
        owner = await owner_of(self._cluster, account.sub, from_node)
        if owner is not None:
            moved = redirect(owner, upstream_path)
            if moved is not None:
                return moved
        # Quotas are the owner node's to check: it has the account's folder.
        check = None
        if owner is None:
            try:
                check = await self._bodies.quota_check(account, upstream_path)
            except OverQuota as exc:
                return await self._bodies.refuse(request, upstream_path, QuotaReached(str(exc)))
        meter = self._bodies.meter(account.name, address, upstream_path, check)
        body: bytes | SpooledBody | None = None
        applied = False
        try:
            # From its arrival, a request of the account's live sync holds it (syncsession/),
            # however long its body takes; the body comes whole before any worker is taken
            # (web/spool.py: one still arriving holds no worker).
            with self._arrival(owner, account.name, upstream_path, header.session):
                body = await self._bodies.read(request, meter, check)
                reuse = self._upstream.reusable(body, upstream_path)
                if owner is not None:
                    return await self._upstream.to_node(
                        request,
                        upstream_path,
                        owner,
                        (account.sub, header.key),
                        address,
                        body,
                        reuse,
                    )
                response = await self._forward(
                    request, upstream_path, (account.sub, account.name), header.session, body, reuse
                )
                # 200: the worker took it, and its media stays counted (quota/guard.py).
                applied = response.status == 200
                return response
        except (BodyTooLarge, Overloaded, UnreadableBody) as exc:
            # No byte of it reached a worker: the drain, at the client's pace, must not keep the
            # budget from other bodies meanwhile.
            meter.release()
            return await self._bodies.refuse(request, upstream_path, exc)
        finally:
            meter.release()  # the worker is done with the body: its answer has been sent
            if isinstance(body, SpooledBody):
                body.close()
            if isinstance(check, MediaCheck):
                check.done(applied)  # reserved when its _meta passed (quota/mediatotal.py)

    def _arrival(
        self, owner: Node | None, account: str, upstream_path: str, session: str
    ) -> contextlib.AbstractContextManager[None]:
        """The request's hold on its live sync while it is here (syncsession/); the owner node
        takes it for a forwarded request."""
        if owner is not None or self._sessions is None:
            return contextlib.nullcontext()
        return self._sessions.arrived(account, upstream_path, session)

    def _passage(
        self, account: str, upstream_path: str, session: str
    ) -> contextlib.AbstractAsyncContextManager[Passage]:
        """Past a backup of the account (backup/gate.py); nothing to pass without a gate."""
        if self._gate is None:
            return contextlib.nullcontext(Passage())
        return self._gate.passage(account, upstream_path, session)

    async def _forward(
        self,
        request: web.Request,
        upstream_path: str,
        sub_and_name: tuple[str, str],
        session: str,
        body: bytes | SpooledBody | None,
        reuse: bool,
    ) -> web.StreamResponse:
        await still_owner(self._cluster, sub_and_name[0])
        account = sub_and_name[1]
        # Past a backup of the account only once the body is here: a sync cut while its body
        # arrived must not reach the fresh worker (backup/gate.py).
        async with self._passage(account, upstream_path, session) as passage:
            # Then the account's one collection sync (syncsession/), decided after any backup
            # that held the request: a backup stops the worker, which drops the lease, so a
            # `start` that claimed one before being held would reach the fresh worker with no
            # lease left, and its sync's next request would be refused as cut (503).
            async with self._turn(account, upstream_path, session) as turn:
                if turn.answer is not None:
                    return turn.answer
                response = await self._upstream.to_worker(
                    request, upstream_path, account, body, reuse=reuse
                )
                passage.status = turn.status = response.status
                return response

    def _turn(
        self, account: str, upstream_path: str, session: str
    ) -> contextlib.AbstractAsyncContextManager[Turn]:
        """This request's turn in the account's one sync (syncsession/); none without a guard."""
        if self._sessions is None:
            return contextlib.nullcontext(Turn())
        return self._sessions.turn(account, upstream_path, session)


#: The app's proxy (gateway/resources.py builds it).
PROXY: web.AppKey[Proxy] = web.AppKey("proxy")
