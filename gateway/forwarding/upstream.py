"""The exchange with an upstream: the account's worker, or its owner node (the proxy,
gateway/proxy.py, sends each request through here once its body is whole).

    new_upstream_session(reuse=False) -> aiohttp.ClientSession   the connections used here
    Upstream(pool, upstream, reused, cluster, answer_dir)
      .reusable(body, upstream_path) -> bool   may it go over a reused connection
      .to_worker(request, upstream_path, account, body, reuse=) -> the answer, its headers
          sent; returns once the worker's side of it is read, its client's side delivering
          (forwarding/delivery.py: the caller waits for it inside `delivering(request)`)
      .to_node(request, upstream_path, node, (sub, key), address, body, reuse) -> the same
    errors: WorkerTimeout, WorkerFailed, WorkerDied (502/503/504, errors.py); `Unavailable`
    (503, Retry-After) when the owner node refuses or cannot be reached, or a worker answers
    403. Never a 403.

Two ways to a worker: a POST without a query whose body is whole in memory (every small
request of a stock client) goes over the worker link (forwarding/wire.py: one write, the answer
parsed by httptools; aiohttp's client was the largest single share of the gateway's time per
`sync/meta`, issue 16); uploads spooled to disk, anything else, and requests to another node go
through aiohttp's client. Both keep every rule below.

Bodies pass both ways untouched; answers stream: no decompression, no redirects followed, and
`anki-original-size` and an answer's `Content-Length` pass through. The rules follow Go's
`httputil.ReverseProxy`: drop the hop-by-hop headers (RFC 9110 §7.6.1) and every header the
`Connection` header names (web/headers.py); when the upstream fails mid-body, abort the client
connection so the client sees a broken transfer instead of a clean, truncated one.

Answers (issue 16): the worker's status and headers go to the client at once, and its body
goes through a relay (web/relay.py): read from the worker at loopback speed, sent to the client
at the client's pace by a task of its own (forwarding/delivery.py). So the worker's lease (one
of `workers.max_workers`), the account's sync turn and a backup's passage end once the worker
has answered, not once the client has read it: a client reading a big `sync/download` slowly
used to hold them all (with one worker slot, another user's sync got 503). A client that keeps
up takes the bytes from memory as they come; for a slower one, past `ANSWER_MEMORY` bytes what
comes until it has caught up waits in an unnamed temporary file in `answer_dir` (the data
folder), for one answer per account at a time and `MAX_ANSWERS_ON_DISK` over all accounts
(so the disk holds at most that many collections for slow clients, however many free
accounts read slowly at once; another answer meanwhile waits for its client, holding its
worker, as before: bounded by `workers.max_workers`). A small answer (one that ends within
`WHOLE_ANSWER` bytes: every `sync/meta`, `start`, `chunk` ...) skips the relay: it is read
whole and leaves with its headers in one write (with a Content-Length: the stock server sends
them chunked; only the framing changes) after the worker is let go, so a worker failing
half-way through it is a 502, never a truncated answer.

A worker's 403 is never passed on (anki-sync-protocol.md: a 403 logs the user out). The key
was admitted (auth/admission.py), and a worker accepts exactly its account's keys of the
current generation, so a 403 from it means the request reached the wrong sync server or a stale
one, never a wrong key: a port another account's worker took once this account's had died
(another gateway process's worker is trusted for a second between probes, workers/pool.py), or
a worker started before the account's key generation moved on. The client gets 503 with
Retry-After, and the worker is reported broken: a dead one buried, a borrowed one forgotten, so
the next request reaches a fresh one (`_forbidden`: why a live one is not retired).

Upstream framing and connection reuse (measured with bench/, issue 5). The stock server
answers as soon as the zstd frame in a body ends; a body sent chunked can have its closing `0`
chunk arrive after that, unread data the server answers by resetting the connection, which cuts
its answer short (2.5-5 % of full downloads of a 1 MB collection failed that way). This is also
what made pooled keep-alive connections fail (29 % with chunked bodies, 0 of 3,000 with a
Content-Length). So every request body is sent with a `Content-Length` (the bytes unchanged,
only the framing): up to `WHOLE_BODY` bytes held in memory (forwarding/body.py), and over a
reused connection (below: which methods); bigger bodies (uploads) from an unnamed temporary file
in the data folder (web/spool.py), over a fresh connection each.

Sending a request twice (design.md: "retries happen only when the request provably never
reached a worker"). A refused connection proves nothing reached the worker: any request is then
sent once more, to a fresh worker, except a request of a running sync (`syncsession.rules.
IN_SYNC`: the sync died with the worker, so it gets 503). A reused connection that breaks
cannot tell a worker that had closed it before the request from one that read the request and
then broke, and `applyChanges`, `applyChunk`, `finish` and most other methods must never be
applied twice. So
only read-only methods (`protocol.may_send_twice`) are sent again, on a fresh connection, when a
reused one breaks before any byte of an answer; any other failure after connecting is a 502 (a
503 when the worker turns out dead). Through aiohttp's client only read-only methods go over
reused connections. Over the worker link (forwarding/wire.py) every method may: the stock server
never closes an idle connection (measured: one held 40 s stayed open), the link closes its own
after 5 s, and one with anything to read (the worker's end of it closed, or stray bytes) is
never used; so a kept connection breaks only when its worker stops or dies, and then a write
sent over it gets its 502/503 and is never sent again (a fresh connection would have had the
same answer, or a fresh worker without the sync the write belonged to). A fresh connection per
write was a connect and a close for six of a sync's eight requests (issue 18: about a quarter
of the gateway's CPU per sync, docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import NoReturn

import aiohttp
from aiohttp import web

from gateway import protocol
from gateway.cluster import signing
from gateway.cluster.internal import NODE_HEADERS, RETRY_AFTER, Cluster, forwarding_headers
from gateway.cluster.placement import Node
from gateway.errors import (
    Unavailable,
    WorkerDied,
    WorkerFailed,
    WorkerTimeout,
)
from gateway.forwarding import wire
from gateway.forwarding.delivery import AnswerBroken, deliver
from gateway.web.headers import REQUEST_OWNED, RESPONSE_OWNED, end_to_end
from gateway.web.relay import Relay
from gateway.web.spool import SpooledBody
from gateway.workers.pool import WorkerPool
from gateway.workers.syncsession.rules import IN_SYNC

log = logging.getLogger("gateway.proxy")

#: Chunk size when copying an upstream body to the client.
CHUNK = 64 * 1024
#: Bytes of an answer held in memory for a client slower than its worker; past them, the rest
#: goes to a temporary file (module doc: "Answers").
ANSWER_MEMORY = 4 * CHUNK
#: An answer that ends within this many bytes is read whole and sent in one write.
WHOLE_ANSWER = CHUNK
#: Answers that may wait on disk at once, over all accounts (module doc: "Answers"): each can
#: be a whole collection, on the disk the workers' collections live on. The default of
#: `workers.max_answers_on_disk` (config/schema.py), which the proxy passes.
MAX_ANSWERS_ON_DISK = 8
#: Headers of a request not sent upstream, and of an answer not sent back, besides the
#: hop-by-hop ones (web/headers.py): each side's HTTP stack owns them.
_REQUEST_DROP = REQUEST_OWNED | NODE_HEADERS
_ANSWER_DROP = RESPONSE_OWNED | {"content-length"}


class _StaleConnection(Exception):
    """A reused upstream connection broke before an answer: the worker may or may not have read
    the request (sent again only for a read-only method: module doc)."""


class _Refused(Exception):
    """The upstream refused the connection: nothing reached it."""


class _NodeRefused(Exception):
    """The owner node refused a forwarded request (signature, or not the owner any more)."""


class _WorkerForbade(Exception):
    """The worker answered 403 to a key the gateway admitted (module doc: "A worker's 403")."""


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


async def _head(upstream: aiohttp.ClientResponse) -> bytes:
    """The answer's first bytes: all of it if it ends within `WHOLE_ANSWER` bytes (then the
    stream is at its end), else somewhat more than `WHOLE_ANSWER`."""
    head = bytearray()
    while len(head) <= WHOLE_ANSWER:
        chunk = await upstream.content.readany()
        if not chunk:
            break
        head += chunk
    return bytes(head)


class _ClientAnswer:
    """An answer read by aiohttp's client, in the shape of `wire.Answer`: its first bytes
    read (`_head`)."""

    def __init__(self, upstream: aiohttp.ClientResponse, head: bytes) -> None:
        self.status = upstream.status
        self.reason = upstream.reason
        self.headers = upstream.headers
        self.head = head
        self.complete = upstream.content.at_eof()
        self._upstream = upstream

    def rest(self) -> AsyncIterator[bytes]:
        return self._upstream.content.iter_chunked(CHUNK)


def _upstream_failure(exc: Exception, *, stale: bool) -> Exception:
    """The gateway error for a failed upstream request (`exc` itself if it is none of ours)."""
    if isinstance(exc, TimeoutError):
        return WorkerTimeout("worker did not answer in time")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)) and stale:
        return _StaleConnection()
    if isinstance(exc, aiohttp.ClientError):
        return WorkerFailed(f"worker request failed: {type(exc).__name__}")
    return exc


class Upstream:
    """Sends a request to the account's worker or its owner node, and streams the answer."""

    def __init__(
        self,
        pool: WorkerPool,
        upstream: aiohttp.ClientSession,
        reused: aiohttp.ClientSession | None = None,
        cluster: Cluster | None = None,
        answer_dir: Path | None = None,
        max_on_disk: int = MAX_ANSWERS_ON_DISK,
    ) -> None:
        self._cluster = cluster
        self._max_on_disk = max_on_disk
        self._pool = pool
        self._upstream = upstream
        self._reused = reused
        self._answer_dir = answer_dir or Path(tempfile.gettempdir())
        #: Accounts with an answer in a relay that may go to disk (`_answer_folder`).
        self._relaying: set[str] = set()
        #: Small requests to this host's workers (forwarding/wire.py).
        self._link = wire.WorkerLink()

    def close(self) -> None:
        """Closes the idle connections to workers (the sessions are the caller's)."""
        self._link.close()

    def reusable(self, body: bytes | SpooledBody | None, upstream_path: str) -> bool:
        """Whether the request may go over a reused connection: whole and of a read-only method
        (module doc)."""
        return (
            self._reused is not None
            and isinstance(body, bytes)
            and protocol.may_send_twice(upstream_path)
        )

    async def to_node(
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
            except (_Refused, _NodeRefused) as exc:
                cluster.router.forget(sub_and_key[0])
                raise Unavailable(
                    f"owner node {node.id}: {type(exc).__name__}", retry_after=RETRY_AFTER
                ) from None
        raise WorkerFailed("owner node closed the connection")

    async def to_worker(
        self,
        request: web.Request,
        upstream_path: str,
        account: str,
        body: bytes | SpooledBody | None,
        *,
        reuse: bool,
    ) -> web.StreamResponse:
        # One more try (module doc): after a refused connection (nothing reached the worker), or
        # a broken kept one for a read-only method. Nothing else is sent twice.
        direct = self._direct(request, body)
        if direct:
            # Over the worker link every method may take a kept connection (module doc).
            reuse = self._reused is not None
        for attempt in (1, 2):
            async with self._pool.lease(account) as worker:
                try:
                    if direct:
                        return await self._exchange_direct(
                            request,
                            worker.port,
                            upstream_path,
                            body,  # type: ignore[arg-type]
                            reuse=reuse,
                            account=account,
                        )
                    url = worker.base_url + upstream_path
                    return await self._exchange(request, url, body, reuse=reuse, account=account)
                except _StaleConnection:
                    if not protocol.may_send_twice(upstream_path):
                        # The worker may have read it: a write is never sent again.
                        await self._failed(account, WorkerFailed("worker closed the connection"))
                    reuse = False
                except _WorkerForbade:
                    await self._forbidden(account)
                except _Refused:
                    await self._pool.report_broken(account)
                    if upstream_path in IN_SYNC:
                        # Its sync died with the worker: a fresh one would not know it (and
                        # a stock server answers a stray sync request 409, which Anki shows
                        # as another device syncing). The sync is cut: "try again" (503).
                        raise WorkerDied("worker gone during the sync") from None
                    if attempt == 2:
                        raise WorkerFailed("worker refused the connection") from None
                except WorkerFailed as exc:
                    await self._failed(account, exc)
        raise WorkerFailed("worker closed the connection")

    async def _failed(self, account: str, failure: WorkerFailed) -> NoReturn:
        """Raises `failure`, or `WorkerDied` (503) when the worker turns out dead: killed at its
        memory limit, or crashed; retryable, never a 403 (gateway/workers/containment/). A
        fresh worker serves the next request."""
        death = await self._pool.report_broken(account)
        if death is not None:
            raise WorkerDied(f"worker died: {death.detail}") from failure
        raise failure

    async def _forbidden(self, account: str) -> NoReturn:
        """A worker's 403 (module doc): 503 with Retry-After; the worker reported broken (a
        borrowed one forgotten, a dead one buried). Not retired: a live worker of ours that
        refuses its account's key is an old key generation's, which the pool's reaper retires
        (auth/login.py), and a retire per 403 would make any way to draw a worker's 403 cost
        a worker start per request."""
        log.warning("worker refused an admitted key: not passed on", extra={"account": account})
        await self._pool.report_broken(account)
        raise Unavailable("the account's sync server refused its key", retry_after=RETRY_AFTER)

    def _direct(self, request: web.Request, body: bytes | SpooledBody | None) -> bool:
        """Whether the request goes by the worker link (forwarding/wire.py): a POST without a
        query whose body is whole in memory, as every small request of a stock client."""
        return (
            not isinstance(body, SpooledBody)
            and request.method == "POST"
            and not request.query_string
        )

    async def _exchange_direct(
        self,
        request: web.Request,
        port: int,
        upstream_path: str,
        body: bytes | None,
        *,
        reuse: bool,
        account: str,
    ) -> web.StreamResponse:
        """`_exchange` over the worker link (forwarding/wire.py): the same answer rules."""
        headers = end_to_end(request.headers, _REQUEST_DROP)
        try:
            answer = await self._link.exchange(
                port, "POST", "/" + upstream_path, headers, body, reuse=reuse, whole=WHOLE_ANSWER
            )
        except ValueError:
            # A line break in a header (aiohttp's parser refuses them): nothing was sent.
            return await self._exchange(
                request,
                f"http://127.0.0.1:{port}/{upstream_path}",
                body,
                reuse=reuse and protocol.may_send_twice(upstream_path),  # aiohttp's rule
                account=account,
            )
        except wire.Refused as exc:
            raise _Refused() from exc
        except wire.Stale:
            if reuse:
                raise _StaleConnection() from None
            raise WorkerFailed("worker request failed: connection closed") from None
        except wire.Broken as exc:
            raise WorkerFailed(f"worker request failed: {exc}") from None
        except TimeoutError:
            raise WorkerTimeout("worker did not answer in time") from None
        try:
            if answer.status == 403:
                raise _WorkerForbade()
            return await self._respond(request, answer, account)
        finally:
            answer.release()

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
        """Sends the request by aiohttp's client; answers with the worker's status and headers
        at once, and returns once the worker's side of the answer is read into a relay (module
        doc: "Answers"). `account`: whose answer (one answer on disk each)."""
        headers = end_to_end(request.headers, _REQUEST_DROP)
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
        except aiohttp.ClientConnectorError as exc:
            raise _Refused() from exc
        except Exception as exc:
            mapped = _upstream_failure(exc, stale=session is self._reused)
            if mapped is exc:
                raise
            raise mapped from exc
        async with upstream:
            if extra and signing.REFUSED in upstream.headers:
                raise _NodeRefused()  # never a node's 401 to a client (cluster/internal.py)
            if not extra and upstream.status == 403:
                raise _WorkerForbade()  # (a node's 403 is its admission's: passed on)
            try:
                head = await _head(upstream)
            except Exception as exc:
                mapped = _upstream_failure(exc, stale=False)
                if mapped is exc:
                    raise
                raise mapped from exc
            return await self._respond(request, _ClientAnswer(upstream, head), account)

    async def _respond(
        self, request: web.Request, answer: _ClientAnswer | wire.Answer, account: str
    ) -> web.StreamResponse:
        """The answer to the client, from the upstream's `answer` whose first bytes are read
        (module doc: "Answers")."""
        headers = end_to_end(answer.headers, _ANSWER_DROP)
        # A small answer (every sync/meta, start, chunk...; the stock server sends them
        # chunked, without a Content-Length) is read whole at loopback speed, then headers and
        # body leave in one write once the worker is let go, with no relay or delivery task
        # (issue 18: a write per part was a sixth of the gateway's busy time). Failing before
        # any byte went to the client, it is a 502.
        if answer.complete:
            return web.Response(
                status=answer.status, reason=answer.reason, headers=headers, body=answer.head
            )
        response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=headers)
        length = answer.headers.get("Content-Length")
        if length is not None and length.isdigit():
            response.content_length = int(length)
        await response.prepare(request)
        folder = self._answer_folder(account)
        relay = Relay(folder, memory=ANSWER_MEMORY)
        delivery = deliver(request, response, relay)
        if folder is not None and account:
            self._relaying.add(account)
            delivery.add_done_callback(lambda _: self._relaying.discard(account))
        try:
            if not await relay.put(answer.head):
                return response  # the client's side gave up (gone, stalled)
            async for chunk in answer.rest():
                if not await relay.put(chunk):
                    break  # the client's side gave up (gone, stalled)
            relay.end()
        except (aiohttp.ClientError, wire.Broken, TimeoutError) as exc:
            # Headers are gone already; a clean end would hand the client a truncated body.
            log.warning(
                "upstream failed mid-body; aborting client connection",
                extra={"error": type(exc).__name__},
            )
            relay.fail(AnswerBroken())
        except OSError as exc:  # the answer folder's disk (full, gone)
            log.error(
                "answer could not be held for a slow client; aborting client connection",
                extra={"error": type(exc).__name__},
            )
            relay.fail(AnswerBroken())
        return response

    def _answer_folder(self, account: str) -> Path | None:
        """Where an answer too big for memory waits for a slow client: one answer of an
        account at a time, `max_on_disk` over all accounts; another one holds its worker while
        its client is slow."""
        if account in self._relaying or len(self._relaying) >= self._max_on_disk:
            return None
        return self._answer_dir
