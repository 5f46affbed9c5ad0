"""The reverse proxy for `sync/*` and `msync/*`.

Routing is by the host key in the `anki-sync` header: key → account (`Admission`, which also
refuses revoked keys on every method) → that account's worker (pool). Bodies pass both ways
untouched; answers stream, a request body is read whole before it goes to a worker (below): no
decompression, no redirects followed, and `anki-original-size` and an answer's
`Content-Length` pass through. The rules
follow Go's `httputil.ReverseProxy`: drop the hop-by-hop headers (RFC 9110 §7.6.1) and every
header the `Connection` header names (web/headers.py); when the upstream fails mid-body, abort
the client connection so the client sees a broken transfer instead of a clean, truncated one.

Answers (issue 16): the worker's status and headers go to the client at once, and its body
streams through a relay (web/relay.py): read from the worker at loopback speed, sent to the
client at the client's pace (web/pace.py) by a task of its own. The worker's lease (one of
`workers.max_workers`), the account's sync turn and a backup's passage end once the worker
has answered (`_exchange` returns); `forward` then waits for the client's side. Before, a
client reading a big `sync/download` or `msync/downloadFiles` slowly held all three for as
long as it took (with one worker slot, another user's sync got 503). A client that keeps up
takes the bytes from memory as they come; for a slower one, past `ANSWER_MEMORY` bytes the
rest waits in an unnamed temporary file in the data folder, one answer per account at a time
(another answer of the same account meanwhile waits for its client, holding its worker, as
before). When the worker fails mid-body the client's connection is aborted once it has the
bytes before the failure.

Upstream framing and connection reuse (measured with bench/, issue 5). The stock server
answers as soon as the zstd frame in a body ends; a body sent chunked can have its closing `0`
chunk arrive after that, unread data the server answers by resetting the connection, which cuts
its answer short (2.5-5 % of full downloads of a 1 MB collection failed that way). This is also
what made pooled keep-alive connections fail (29 % with chunked bodies, 0 of 3,000 with a
Content-Length). So every request body is sent with a `Content-Length` (the bytes unchanged,
only the framing): up to `WHOLE_BODY` bytes held in memory, and over a reused connection for
read-only methods; bigger bodies (uploads) from an unnamed temporary file in the data folder
(web/spool.py), over a fresh connection each.

Request bodies come whole before a worker is taken (issue 16, fairness). A body that streamed
to its worker as it arrived held one of `workers.max_workers` for as long as its client took
to send it: three accounts trickling a body each filled a pool of three, and every other
user's sync got 503 (tests/test_hostile_bodies.py). Now a body still arriving holds a
connection, its meter's share of the inflation budget and its bytes on disk, but no worker, no
worker slot and no backup (backup/gate.py); the worker then reads it at loopback speed. The
sync session (syncsession/) is decided once the body is here too, but a request of the live
sync holds that sync from its arrival (`SessionGuard.arrived`), so a slow body keeps it.

Body sizes (uploads/payload.py): every request body passes a `PayloadMeter` before its bytes go
upstream, so the gateway, not the stock server, enforces `workers.max_payload_megs` on the wire
and bounds what a body may inflate to in the worker. A body that breaks a rule never reaches a
worker: the rest of it is read and dropped (`drain()`, at most the cap again), and the client
gets what the stock server answers an honest oversized collection on `sync/upload` (200,
"collection exceeds size limit", which Anki shows), 413 on any other method. A body that would
take the bodies in flight together past `workers.max_inflated_megs` (`InflationBudget`) is
refused the same way with 503 ("try again"). The meter only reads; the bytes still pass
untouched. A body the meter cannot read (not one modern zstd frame, frames.py) gets 415, a media
upload whose zip is not as Anki writes it (`msync/uploadChanges`, mediazip.py) 413 with a
message. Since the body is metered whole before the sync session or a backup is asked, a body
over the limits gets its 413/415/503 whatever the account's state (another device's sync, a sync
that was cut): that answer is true in every state, and tells a client not to send the body
again, where the session's "try again" would invite it. The meter inflates in a thread pool
(`INFLATERS`), except for the first bytes of small bodies (payload.py, `feed_inline`), so no
body's inflating holds up the event loop.

Sending a request twice (design.md: "retries happen only when the request provably never
reached a worker"). A refused connection proves nothing reached the worker: any request is then
sent once more, to a fresh worker. A reused connection that breaks cannot tell a worker that
had closed it before the request from one that read the request and then broke, and
`applyChanges`, `applyChunk`, `finish` and most other methods must never be applied twice. So
only read-only methods (`protocol.may_send_twice`) go over reused connections, and only they are
sent again, on a fresh connection, when a reused one breaks; everything else goes over a fresh
connection, and any failure after connecting is a 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway import metrics, protocol
from gateway.appkeys import ACCOUNT, CONFIG
from gateway.auth.admission import Admission
from gateway.backup.gate import BackupGate, Passage
from gateway.cluster import signing
from gateway.cluster.internal import (
    FORWARDED_FOR,
    NODE_HEADERS,
    RETRY_AFTER,
    Cluster,
    Misdirected,
    forwarding_headers,
)
from gateway.cluster.placement import Forward, Node, Serve
from gateway.errors import (
    BodyTooLarge,
    ClientStalled,
    MediaZipRefused,
    Overloaded,
    QuotaReached,
    Unavailable,
    UnreadableBody,
    WorkerDied,
    WorkerFailed,
    WorkerTimeout,
)
from gateway.quota import OverQuota, QuotaGuard, answers
from gateway.quota.guard import BodyCheck, MediaCheck
from gateway.registry.base import Account
from gateway.uploads import payload
from gateway.web.bodies import (
    client_side,
    drain,
    loop_time,
    paced_chunks,
    paced_write,
    pacing_of,
)
from gateway.web.headers import REQUEST_OWNED, RESPONSE_OWNED, end_to_end
from gateway.web.middlewares import answer_and_close, client_address
from gateway.web.relay import Relay
from gateway.web.spool import SpooledBody, spool
from gateway.workers.pool import WorkerPool
from gateway.workers.syncsession import SessionGuard, Turn

log = logging.getLogger("gateway.proxy")

#: Chunk size when copying an upstream body to the client.
CHUNK = 64 * 1024
#: Request bodies up to this size are forwarded whole, with a Content-Length (module doc).
WHOLE_BODY = 64 * 1024
#: Bytes of an answer held in memory for a client slower than its worker; the rest goes to a
#: temporary file (web/relay.py, module doc: "Answers").
ANSWER_MEMORY = 4 * CHUNK
#: Threads that inflate request bodies to meter them (zstandard releases the GIL): one a core.
INFLATERS = ThreadPoolExecutor(max(2, os.cpu_count() or 1), thread_name_prefix="inflate")
#: The method whose body is a media zip (uploads/mediazip.py).
MEDIA_UPLOAD = "msync/uploadChanges"


async def request_body(
    request: web.Request,
    meter: payload.PayloadMeter,
    spool_dir: Path,
    check: BodyCheck | None = None,
) -> bytes | SpooledBody | None:
    """The whole body to send upstream: in memory if it ends within `WHOLE_BODY` bytes, else in
    a temporary file in `spool_dir` (web/spool.py), read at the client's pace (web/bodies.py:
    `ClientStalled` when it stops or trickles). Every chunk passes `meter` (and the account's
    quota `check`) as it arrives: `BodyTooLarge` instead (also for a Content-Length over the
    cap, before any byte is read)."""
    if not request.body_exists:
        return None
    if (request.content_length or 0) > meter.limits.max_compressed:
        raise BodyTooLarge(f"Content-Length {request.content_length} over the payload cap")
    chunks = _metered(paced_chunks(request), meter, check)
    head = bytearray()
    try:
        async for chunk in chunks:
            head += chunk
            if len(head) > WHOLE_BODY:
                return await spool(bytes(head), chunks, spool_dir)
    except Exception as exc:
        mapped = client_side(exc)
        if mapped is exc:
            raise
        raise mapped from exc
    return bytes(head)  # the body ended within the limit


async def _metered(
    chunks: AsyncIterator[bytes], meter: payload.PayloadMeter, check: BodyCheck | None = None
) -> AsyncIterator[bytes]:
    """`chunks`, each once `meter` (and the account's quota `check`) let it pass; the
    inflating runs in a thread unless cheap (uploads/payload.py)."""
    loop = asyncio.get_running_loop()
    async for chunk in chunks:
        try:
            if not meter.feed_inline(chunk):
                await loop.run_in_executor(INFLATERS, meter.feed, chunk)
            if check is not None:
                check.chunk(meter.compressed, meter.inflated)
        except OverQuota as exc:
            raise QuotaReached(str(exc)) from None
        except payload.TooLarge as exc:
            raise BodyTooLarge(
                f"request body {exc.reason} (compressed {meter.compressed}, "
                f"inflated {meter.inflated} bytes so far)"
            ) from None
        except payload.OverBudget as exc:
            raise Overloaded(str(exc)) from None
        except payload.Unreadable as exc:
            raise UnreadableBody(f"request body unreadable: {exc}") from None
        except payload.Refused as exc:
            raise MediaZipRefused(f"media zip refused: {exc}") from None
        yield chunk


class _StaleConnection(Exception):
    """A reused upstream connection broke before an answer: the worker may or may not have read
    the request (only read-only requests use reused connections)."""


class _NodeRefused(Exception):
    """The owner node refused a forwarded request (signature, or not the owner any more)."""


def new_upstream_session(*, reuse: bool = False) -> aiohttp.ClientSession:
    connector = (
        aiohttp.TCPConnector(limit=0, keepalive_timeout=5)
        if reuse
        else aiohttp.TCPConnector(force_close=True, limit=0)
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # No total limit: a 300 MB download or the server's post-upload check may take long.
        # The client has its own stall timer (60 s); sock_read stays above it.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )


def _upstream_failure(exc: Exception, *, stale: bool) -> Exception:
    """The gateway error for a failed upstream request (`exc` itself if it is none of ours)."""
    if isinstance(exc, TimeoutError):
        return WorkerTimeout("worker did not answer in time")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)) and stale:
        return _StaleConnection()
    if isinstance(exc, aiohttp.ClientError):
        return WorkerFailed(f"worker request failed: {type(exc).__name__}")
    return exc


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
    ) -> None:
        self._spool_dir = spool_dir or Path(tempfile.gettempdir())
        self._sessions = sessions
        self._quota = quota
        self._gate = gate
        self._cluster = cluster
        self._limits = limits or payload.PayloadLimits.from_megs(100)
        self._budget = budget
        self._admission = admission
        self._pool = pool
        self._upstream = upstream
        self._reused = reused
        #: Accounts with an answer in a relay that may go to disk (`_answer_folder`).
        self._relaying: set[str] = set()

    async def forward(
        self, request: web.Request, upstream_path: str, *, from_node: bool = False
    ) -> web.StreamResponse:
        """Serve one sync request. `from_node`: it came signed from another node (cluster/
        internal.py), which saw the client's address; it is never forwarded again."""
        deliveries: list[asyncio.Task[None]] = []
        request[DELIVERIES] = deliveries
        try:
            response = await self._serve(request, upstream_path, from_node)
            # The worker (its lease, the account's sync turn, a backup's passage) is free:
            # only the client's side of the answer is left (module doc: "Answers").
            for delivery in deliveries:
                await delivery
            return response
        finally:
            for delivery in deliveries:
                if not delivery.done():
                    delivery.cancel()  # the request failed or was cancelled meanwhile
                elif not delivery.cancelled():
                    delivery.exception()  # retrieved: the request's own error is the one told

    async def _serve(
        self, request: web.Request, upstream_path: str, from_node: bool
    ) -> web.StreamResponse:
        header = protocol.parse_sync_header(request.headers.get(protocol.SYNC_HEADER))
        # A request forwarded by another node: the client's address as that node saw it.
        address = request.get(FORWARDED_FOR) or client_address(
            request, request.app[CONFIG].server.trust_forwarded_for
        )
        account = await self._admission.admit(header.key, address)
        request[ACCOUNT] = account.name
        owner = None
        if self._cluster is not None:
            owner = await self._owner(account.sub, from_node)
            if owner is not None and owner.public_url and upstream_path == "sync/meta":
                # The protocol's own way to move a client (anki-sync-protocol.md): a 308 from
                # sync/meta to a new base URL, which the client keeps for every later request.
                metrics.cluster_route("redirected")
                log.info("client moved to its owner node", extra={"node": owner.id})
                return web.Response(status=308, headers={"Location": owner.public_url})
            if owner is not None:
                metrics.cluster_route("forwarded")
        # Quotas are the owner node's to check: it has the account's folder.
        check = None
        if owner is None and self._quota is not None:
            try:
                check = await self._quota_check(account, upstream_path)
            except OverQuota as exc:
                return await self._refuse_body(request, upstream_path, QuotaReached(str(exc)))
        # Budget owners: the account and the client's address (uploads/budget.py).
        meter = payload.PayloadMeter(
            self._limits,
            self._budget,
            (f"account:{account.name}", f"address:{address}"),
            media_zip=upstream_path == MEDIA_UPLOAD,
            on_meta=check.on_meta if isinstance(check, MediaCheck) else None,
        )
        body: bytes | SpooledBody | None = None
        try:
            # From its arrival, a request of the account's live sync holds it (syncsession/),
            # however long its body takes; the body comes whole before any worker is taken
            # (web/spool.py: one still arriving holds no worker).
            with self._arrival(owner, account.name, upstream_path, header.session):
                body, reuse = await self._body(request, upstream_path, meter, check)
                if owner is not None:
                    return await self._to_node(
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
                if response.status == 200:
                    check = None  # the worker took it: its media stays counted (quota/guard.py)
                return response
        except (BodyTooLarge, Overloaded, UnreadableBody) as exc:
            # No byte of it reached a worker: the drain, at the client's pace, must not keep the
            # budget from other bodies meanwhile.
            meter.release()
            return await self._refuse_body(request, upstream_path, exc)
        finally:
            meter.release()  # the worker is done with the body: its answer has been sent
            if isinstance(body, SpooledBody):
                body.close()
            if isinstance(check, MediaCheck):
                check.undo()  # counted when its _meta passed, but the worker did not take it

    def _arrival(
        self, owner: Node | None, account: str, upstream_path: str, session: str
    ) -> contextlib.AbstractContextManager[None]:
        """The request's hold on its live sync while it is here (syncsession/); the owner node
        takes it for a forwarded request."""
        if owner is not None or self._sessions is None:
            return contextlib.nullcontext()
        return self._sessions.arrived(account, upstream_path, session)

    async def _quota_check(self, account: Account, upstream_path: str) -> BodyCheck | None:
        """The account's quota check for this request's body (quota/guard.py), or None; raises
        `OverQuota` for a normal sync while the collection on disk is over its limit."""
        assert self._quota is not None
        if upstream_path == "sync/upload":
            return self._quota.upload(account)
        if upstream_path == "msync/uploadChanges":
            return await self._quota.media(account)
        if upstream_path in protocol.GROWS_COLLECTION:
            self._quota.collection(account)
        return None

    async def _body(
        self,
        request: web.Request,
        upstream_path: str,
        meter: payload.PayloadMeter,
        check: BodyCheck | None = None,
    ) -> tuple[bytes | SpooledBody | None, bool]:
        """The request body to send (`request_body`), and whether it may go over a reused
        connection: whole and of a read-only method (module doc)."""
        body = await request_body(request, meter, self._spool_dir, check)
        reuse = (
            self._reused is not None
            and isinstance(body, bytes)
            and protocol.may_send_twice(upstream_path)
        )
        return body, reuse

    async def _owner(self, sub: str, from_node: bool) -> Node | None:
        """The node to forward to, or None when this node serves the account."""
        assert self._cluster is not None
        try:
            decision = await self._cluster.router.route(sub)
        except Unavailable:
            metrics.cluster_route("unavailable")
            raise
        if not isinstance(decision, Forward):
            metrics.cluster_route("here")
            return None
        if from_node:
            raise Misdirected(f"the account belongs to node {decision.node.id}")
        return decision.node

    async def _still_owner(self, sub: str) -> None:
        """`Unavailable` (503) unless this node still owns `sub` (with several nodes). The owner
        was decided when the request's headers came; its body may have taken long enough for
        the account to move away (cluster/move.py waits only for requests on its worker), and
        a worker started now would serve a fresh, empty folder on a node that is no longer
        the owner."""
        if self._cluster is None:
            return
        if not isinstance(await self._cluster.router.route(sub), Serve):
            metrics.cluster_route("unavailable")
            raise Unavailable("the account moved to another node meanwhile", retry_after=1)

    async def _to_node(
        self,
        request: web.Request,
        upstream_path: str,
        node: Node,
        sub_and_key: tuple[str, str],
        address: str,
        body: bytes | SpooledBody | None,
        reuse: bool,
    ) -> web.StreamResponse:
        """Forward to the owner node's internal route: the same body and answer rules as to a
        worker (read-only methods may go twice, after a broken reused connection)."""
        cluster = self._cluster
        assert cluster is not None
        url = cluster.target(node, upstream_path)
        for _ in (1, 2):
            headers = forwarding_headers(cluster, request.method, url, sub_and_key[1], address)
            try:
                return await self._exchange(
                    request, url, body, reuse=reuse, extra=headers, account=sub_and_key[0]
                )
            except _StaleConnection:
                reuse = False
            except (aiohttp.ClientConnectorError, _NodeRefused) as exc:
                cluster.router.forget(sub_and_key[0])
                raise Unavailable(
                    f"owner node {node.id}: {type(exc).__name__}", retry_after=RETRY_AFTER
                ) from None
        raise WorkerFailed("owner node closed the connection")

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
        await self._still_owner(sub_and_name[0])
        account = sub_and_name[1]
        # One collection sync per account (syncsession/): decided once the body is here.
        async with self._turn(account, upstream_path, session) as turn:
            if turn.answer is not None:
                return turn.answer
            # Past a backup of the account only now: a sync cut while its body arrived must
            # not reach the fresh worker (backup/gate.py).
            async with self._passage(account, upstream_path, session) as passage:
                response = await self._send(request, upstream_path, account, body, reuse=reuse)
                passage.status = turn.status = response.status
                return response

    def _turn(
        self, account: str, upstream_path: str, session: str
    ) -> contextlib.AbstractAsyncContextManager[Turn]:
        """This request's turn in the account's one sync (syncsession/); none without a guard."""
        if self._sessions is None:
            return contextlib.nullcontext(Turn())
        return self._sessions.turn(account, upstream_path, session)

    async def _send(
        self,
        request: web.Request,
        upstream_path: str,
        account: str,
        body: bytes | SpooledBody | None,
        *,
        reuse: bool,
    ) -> web.StreamResponse:
        # One more try (module doc): after a refused connection (nothing reached the worker), or
        # a broken reused one (only read-only methods use those). Nothing else is sent twice.
        for attempt in (1, 2):
            async with self._pool.lease(account) as worker:
                url = worker.base_url + upstream_path
                try:
                    return await self._exchange(request, url, body, reuse=reuse, account=account)
                except _StaleConnection:
                    reuse = False
                except aiohttp.ClientConnectorError:
                    await self._pool.report_broken(account)
                    if attempt == 2:
                        raise WorkerFailed("worker refused the connection") from None
                except WorkerFailed as exc:
                    # Killed at its memory limit, or crashed: retryable, never a 403
                    # (gateway/workers/containment/). A fresh worker serves the next request.
                    death = await self._pool.report_broken(account)
                    if death is not None:
                        raise WorkerDied(f"worker died: {death.detail}") from exc
                    raise
        raise WorkerFailed("worker closed the connection")

    async def _refuse_body(
        self,
        request: web.Request,
        upstream_path: str,
        exc: BodyTooLarge | Overloaded | UnreadableBody,
    ) -> web.StreamResponse:
        """The answer to a body over the limits (module doc), once the rest of it is dropped."""
        ended = await drain(request, self._limits.max_compressed)
        if isinstance(exc, QuotaReached):
            metrics.quota_refused(upstream_path)
            log.info("refused: storage limit", extra={"method": upstream_path})
            answer = answers.answer(upstream_path, exc.message)
        elif upstream_path == "sync/upload" and type(exc) is BodyTooLarge:
            log.info("upload refused: too large", extra={"reason": exc.detail})
            answer = protocol.encode_raw_answer(protocol.UPLOAD_TOO_LARGE)
        else:
            answer = None
        if answer is None:
            exc.close_connection = not ended
            raise exc
        body, headers = answer
        response = web.Response(body=body, headers=headers)
        if not ended:
            await answer_and_close(request, response)  # not after aiohttp's lingering time
        return response

    async def _exchange(
        self,
        request: web.Request,
        url: str,
        body: bytes | SpooledBody | None,
        *,
        reuse: bool,
        extra: Mapping[str, str] | None = None,
        account: str = "",
    ) -> web.StreamResponse:
        """Sends the request; answers with the worker's status and headers at once, and returns
        once the worker's side of the answer is read (into a `Relay`): the client's side is a
        task in `request[DELIVERIES]`. `account`: whose answer (one spilled answer each)."""
        headers = end_to_end(request.headers, REQUEST_OWNED | NODE_HEADERS)
        if extra:
            headers.update(extra)
        session = self._reused if reuse and self._reused is not None else self._upstream
        data: bytes | AsyncIterator[bytes] | None = None
        if isinstance(body, SpooledBody):
            data = body.chunks()
            headers["Content-Length"] = str(body.size)  # whole, so never chunked (module doc)
        else:
            data = body
        try:
            upstream = await session.request(
                request.method,
                url,
                params=request.rel_url.query,
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except aiohttp.ClientConnectorError:
            raise
        except Exception as exc:
            mapped = _upstream_failure(exc, stale=session is self._reused)
            if mapped is exc:
                raise
            raise mapped from exc
        async with upstream:
            if extra and signing.REFUSED in upstream.headers:
                raise _NodeRefused()  # never a node's 401 to a client (cluster/internal.py)
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=end_to_end(upstream.headers, RESPONSE_OWNED | {"content-length"}),
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            # The client's side runs apart, to its end after the worker is let go (`forward`).
            folder = self._answer_folder(account)
            relay = Relay(folder, memory=ANSWER_MEMORY)
            delivery = asyncio.create_task(_deliver(request, response, relay))
            request[DELIVERIES].append(delivery)
            if folder is not None and account:
                self._relaying.add(account)
                delivery.add_done_callback(lambda _: self._relaying.discard(account))
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    if not await relay.put(chunk):
                        break  # the client's side gave up (gone, stalled)
                relay.end()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Headers are gone already; a clean end would hand the client a truncated body.
                log.warning(
                    "upstream failed mid-body; aborting client connection",
                    extra={"error": type(exc).__name__},
                )
                relay.fail(_AnswerBroken())
            except OSError as exc:  # the data folder's disk (full, gone)
                log.error(
                    "answer could not be held for a slow client; aborting client connection",
                    extra={"error": type(exc).__name__},
                )
                relay.fail(_AnswerBroken())
            return response

    def _answer_folder(self, account: str) -> Path | None:
        """Where an answer too big for memory waits for a slow client: one answer of an
        account at a time; another one holds its worker while its client is slow."""
        return None if account in self._relaying else self._spool_dir


class _AnswerBroken(Exception):
    """The worker's side of an answer failed after its headers went to the client."""


async def _deliver(request: web.Request, response: web.StreamResponse, relay: Relay) -> None:
    """The client's side of an answer: its bytes at the client's pace (web/pace.py), then its
    end; the connection is aborted if the client stalls or the worker's side broke."""
    pace = pacing_of(request).start(loop_time())
    written = 0  # bytes of the answer handed to the client's connection
    try:
        waiting_since = loop_time()
        async for chunk in relay.chunks():
            pace.skip(loop_time() - waiting_since)  # the worker's time, not the client's
            await paced_write(response, chunk, pace)
            written += len(chunk)
            waiting_since = loop_time()
    except ClientStalled:
        # It does not read the answer (web/pace.py): it would hold its connection for ever.
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("client stalled reading the answer") from None
    except ConnectionError:
        raise  # writing to a client that went away (the middleware logs it)
    except (_AnswerBroken, OSError):
        # The worker's side broke, or the file holding the answer failed.
        if request.transport is not None:
            request.transport.abort()
        return
    finally:
        relay.close()
    try:
        await response.write_eof()
    except ConnectionError:
        # Every byte of the answer was handed over; only the end of the chunked framing
        # found the connection closed. Anki does that after reading msync/begin's whole
        # answer (measured: a 499 "client gone" on about one media sync in three). The
        # answer was delivered: no failure.
        log.debug("client closed right after the whole answer", extra={"bytes": written})


#: The client's side of the answers of a request still to come (`Proxy.forward`).
DELIVERIES: web.RequestKey[list[asyncio.Task[None]]] = web.RequestKey("deliveries", list)


#: The app's proxy (gateway/resources.py builds it).
PROXY: web.AppKey[Proxy] = web.AppKey("proxy")
