"""The request-body policy of the proxy (gateway/proxy.py): which checks a body passes, how it
is read, and what a body that breaks a rule is answered.

    BodyPolicy(limits, budget, quota, spool_dir)
      .quota_check(account, upstream_path) -> BodyCheck | None   raises OverQuota
      .meter(account_name, address, upstream_path, check) -> PayloadMeter
      .read(request, meter, check) -> bytes | SpooledBody | None (request_body)
      .refuse(request, upstream_path, exc) -> the answer, or raises `exc`

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

Quotas (quota/guard.py): an account over its storage limit is refused the way the stock server
refuses (quota/answers.py); the check rides along with the meter, chunk by chunk, and sees
the whole body before it goes on (a collection over its limit: what applyChanges and applyChunk
add, quota/growth.py; the graves start and applyGraves carry, quota/graves.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from gateway import metrics, protocol
from gateway.errors import (
    BodyTooLarge,
    MediaZipRefused,
    Overloaded,
    QuotaReached,
    UnreadableBody,
)
from gateway.quota import OverQuota, QuotaGuard, answers, graves, growth
from gateway.quota.guard import BodyCheck, MediaCheck
from gateway.registry.base import Account
from gateway.uploads import payload
from gateway.web.bodies import client_side, drain, paced_chunks
from gateway.web.middlewares import answer_and_close
from gateway.web.spool import SpooledBody, spool

log = logging.getLogger("gateway.proxy")

#: Request bodies up to this size are forwarded whole, with a Content-Length (forwarding/
#: upstream.py); bigger ones are spooled to a file.
WHOLE_BODY = 64 * 1024
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
    head = bytearray()
    try:
        if request.content.is_eof():
            # The whole body came with its headers (every sync/meta, start, chunk ... of a
            # stock client): one pass of the meter, no generators, no pace to keep (issue 18).
            whole = request.content.read_nowait(-1)
            if whole:
                await _meter(whole, meter, check)
            if len(whole) > WHOLE_BODY:
                return await spool(whole, _nothing(), spool_dir)
            return whole
        chunks = _metered(paced_chunks(request), meter, check)
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


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


async def _metered(
    chunks: AsyncIterator[bytes], meter: payload.PayloadMeter, check: BodyCheck | None = None
) -> AsyncIterator[bytes]:
    """`chunks`, each once `meter` (and the account's quota `check`) let it pass."""
    async for chunk in chunks:
        await _meter(chunk, meter, check)
        yield chunk


async def _meter(chunk: bytes, meter: payload.PayloadMeter, check: BodyCheck | None) -> None:
    """`chunk` through `meter` and the account's quota `check`, or the gateway error for the
    rule it breaks; the inflating runs in a thread unless cheap (uploads/payload.py)."""
    try:
        if not meter.feed_inline(chunk):
            await asyncio.get_running_loop().run_in_executor(INFLATERS, meter.feed, chunk)
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


class BodyPolicy:
    """The rules every request body passes, with the gateway's limits (module doc)."""

    def __init__(
        self,
        limits: payload.PayloadLimits | None = None,
        budget: payload.InflationBudget | None = None,
        quota: QuotaGuard | None = None,
        spool_dir: Path | None = None,
    ) -> None:
        self._spool_dir = spool_dir or Path(tempfile.gettempdir())
        self._quota = quota
        self._limits = limits or payload.PayloadLimits.from_megs(100)
        self._budget = budget

    async def quota_check(self, account: Account, upstream_path: str) -> BodyCheck | None:
        """The account's quota check for this request's body (quota/guard.py), or None (also
        without a quota guard); raises `OverQuota` at sync/meta after a sync that adds to a
        collection over its limit was refused."""
        if self._quota is None:
            return None
        if upstream_path == "sync/upload":
            return self._quota.upload(account)
        if upstream_path == "msync/uploadChanges":
            return await self._quota.media(account)
        if upstream_path == "sync/meta":
            await self._quota.meta(account)
        elif upstream_path in growth.INSPECTED or upstream_path in graves.INSPECTED:
            return await self._quota.collection(account, upstream_path)
        return None

    def meter(
        self, account: str, address: str, upstream_path: str, check: BodyCheck | None
    ) -> payload.PayloadMeter:
        """The meter for this request's body. Budget owners: the account and the client's
        address (uploads/budget.py)."""
        return payload.PayloadMeter(
            self._limits,
            self._budget,
            (f"account:{account}", f"address:{address}"),
            media_zip=upstream_path == MEDIA_UPLOAD,
            on_meta=check.on_meta if isinstance(check, MediaCheck) else None,
        )

    async def read(
        self, request: web.Request, meter: payload.PayloadMeter, check: BodyCheck | None = None
    ) -> bytes | SpooledBody | None:
        """The request body to send (`request_body`), spooled into the data folder if big, once
        the quota `check` passed it whole (`QuotaReached` if not)."""
        body = await request_body(request, meter, self._spool_dir, check)
        if check is not None:
            try:
                check.whole(body)
            except OverQuota as exc:
                if isinstance(body, SpooledBody):
                    body.close()
                raise QuotaReached(str(exc)) from None
        return body

    async def refuse(
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
