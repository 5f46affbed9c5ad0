"""How big a proxied request body may be, counted by the gateway itself. Pure: bytes in, a
verdict out (no I/O).

Why (anki-sync-protocol.md, "Limits of the stock server"): the stock server caps only the
*inflated* body, at three times `MAX_SYNC_PAYLOAD_MEGS`, and holds it in memory while it
inflates; it never limits the compressed size. A 200 MB upload is accepted, and a 10 KB zstd
body of zeros grew a worker by 310 MiB (measured, default 100 MB). So every proxied body passes
a `PayloadMeter` before any of its bytes go upstream; it refuses the body (`TooLarge`) when

- its compressed size (bytes on the wire) passes `max_compressed` (`workers.max_payload_megs`
  MiB), or
- it inflates to `max_inflated` bytes or more (three times that: the stock server's own cap, so
  an upload the stock server takes is never refused here), or
- it inflates to more than `free_inflated + max_ratio * compressed` bytes (a bomb: honest bodies
  shrink about 1.3-5 times, Anki's collection files and JSON alike; zeros shrink ~30,000 times).

Together: the meter takes what its body inflates to from a shared `InflationBudget`
(budget.py, `workers.max_inflated_megs`) as it goes, and `release()` gives it back when the
request has ended; a body that finds no room is refused (`OverBudget`, 503 "try again later").
So no number of concurrent bombs, nor of honest large uploads, make the workers together hold
more than the budget.

The meter inflates each chunk to count it, in pieces of `PIECE` bytes that are dropped at once,
and stops inflating as soon as a rule is broken: a bomb costs the gateway one piece and zstd's
window, and since the gateway forwards a chunk only after its verdict, the worker never gets
the bytes that would take it past a limit.

Formats: the meter reads every body the worker would read, or refuses it. Only one modern
zstd frame passes (frames.py: the worker's decoder also reads legacy formats and skippable
frames, the gateway's does not, and what the meter cannot read it cannot count); a body the
gateway's decoder fails on is refused too (`Unreadable`, answered 415), and so is one of
more blocks than its inflated size needs (`FREE_BLOCKS`: the frame scanner's cost). A media upload
(`media_zip`) must also hold a zip as stock clients write it (mediazip.py: stored entries,
at most 25 files, each named once by `_meta`, sizes consistent), checked on the inflated bytes
as they come: the frame's end is in the chunk whose verdict comes last, so the worker never
gets a whole body that breaks a rule (`mediazip.Refused`, answered 413).

Where the work runs (issue 18): inflating costs CPU in proportion to a body, so the proxy runs
`feed()` in a thread pool (zstandard releases the GIL). `feed_inline()` is the cheap path for
small bodies: it counts a chunk on the caller's thread while the body is within `INLINE_BYTES`
on the wire and `INLINE_OUT` inflated, so a `sync/meta` pays no thread hop; past either bound
it answers False, the meter starts over, and the next `feed()` (in the thread) inflates the
whole body so far again. So the caller's thread never inflates more than `INLINE_OUT` bytes
(and one `PIECE` more) of any body. One body's chunks are fed one at a time, in order;
`release()` may come from another thread while a `feed()` still runs (a cancelled request):
the meter then keeps its decoder out of the pool and its share grants nothing more.

Each body takes its decoder from a `DecoderPool` (decoders.py) and gives it back when its
request has ended, so small bodies do not each pay for a new one; a refused body drops its
decoder instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from gateway.uploads.budget import InflationBudget, OverBudget, Share
from gateway.uploads.decoders import DecoderPool
from gateway.uploads.frames import FrameScanner, Unreadable
from gateway.uploads.mediazip import MediaZipCheck, Refused

__all__ = ["DECODERS", "InflationBudget", "OverBudget", "PayloadLimits", "PayloadMeter", "TooLarge"]

MIB = 1024 * 1024
#: Inflated bytes handed to the counter at a time (and dropped).
PIECE = 64 * 1024
#: The stock server's cap on inflated bodies is this many times `MAX_SYNC_PAYLOAD_MEGS`
#: (rslib/src/sync/request/mod.rs, MAXIMUM_SYNC_PAYLOAD_BYTES_UNCOMPRESSED).
STOCK_INFLATED_FACTOR = 3
#: The decoders every meter takes from unless it is given a pool of its own.
DECODERS = DecoderPool()
#: `feed_inline()` bounds: bytes on the wire, and inflated bytes (~0.1 ms of inflating).
INLINE_BYTES = 64 * 1024
INLINE_OUT = 256 * 1024
#: Zstd blocks a body may have: `FREE_BLOCKS` (about 13 ms of scanning) and one more per
#: `BLOCK_BYTES` inflated (frames.py, "Cost"). Stock encoders write 128 KiB blocks; a client
#: flushing every 200 bytes passes its first 8,000 blocks.
FREE_BLOCKS = 8192
BLOCK_BYTES = 4096
#: A chunk is scanned and inflated in slices of this many bytes, so the bound on its blocks
#: trails what they inflate to by one slice: at most 5,462 blocks (3 bytes each), fewer than
#: `FREE_BLOCKS`. Measured on an honest 31 MiB body: 179-217 ms of metering against 209 ms
#: unsliced (2 KiB slices: 321 ms).
SCAN_SLICE = 16384

__all__ = ["InflationBudget", "OverBudget", "Refused", "TooLarge", "Unreadable"]


class TooLarge(Exception):
    """The body broke a size rule; `reason` says which (for the log, never the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PayloadLimits:
    """Sizes in bytes; `max_ratio` inflated bytes per compressed byte."""

    max_compressed: int
    max_inflated: int
    free_inflated: int = 16 * MIB
    max_ratio: float = 20.0

    @classmethod
    def from_megs(cls, max_payload_megs: int) -> PayloadLimits:
        """The limits for `workers.max_payload_megs` (the worker's MAX_SYNC_PAYLOAD_MEGS)."""
        size = max_payload_megs * MIB
        return cls(max_compressed=size, max_inflated=STOCK_INFLATED_FACTOR * size)

    def inflated_allowance(self, compressed: int) -> int:
        """The most a body of `compressed` bytes so far may inflate to, in bytes."""
        return min(self.max_inflated - 1, self.free_inflated + int(self.max_ratio * compressed))


class _Deferred(Exception):
    """Inflating inline went past `INLINE_OUT`: the rest belongs in a thread."""


class _Counter:
    """The decompressor's sink: counts inflated bytes; past `granted` it asks `grant` for more
    (which raises to stop the decompressor); passes them to the zip check, if any; past `cap`
    (inline) raises `_Deferred`."""

    def __init__(self, grant: Callable[[int], int], zip_check: MediaZipCheck | None) -> None:
        self.inflated = 0
        self.granted = 0
        self.cap: int | None = None
        self._grant = grant
        self.zip_check = zip_check

    def write(self, data: bytes) -> int:
        self.inflated += len(data)
        if self.cap is not None and self.inflated > self.cap:
            raise _Deferred()
        if self.inflated > self.granted:
            self.granted = self._grant(self.inflated)
        if self.zip_check is not None:
            self.zip_check.feed(data)
        return len(data)


class PayloadMeter:
    """One body's meter: `feed()` (or `feed_inline()`) every chunk, in order, before
    forwarding it. Raises `TooLarge`, `OverBudget` (budget.py), `Unreadable` (frames.py) or
    `Refused` (mediazip.py, with `media_zip`), or what `on_meta` raised (it gets the media
    upload's `(filename, size or None)` pairs once `_meta` is read: quota/guard.py); every later
    call raises `TooLarge`."""

    def __init__(
        self,
        limits: PayloadLimits,
        budget: InflationBudget | None = None,
        owners: tuple[str, ...] = (),
        decoders: DecoderPool = DECODERS,
        *,
        media_zip: bool = False,
        on_meta: Callable[[list[tuple[str, int | None]]], None] | None = None,
    ) -> None:
        self.limits = limits
        self._share: Share | None = budget.share(owners) if budget is not None else None
        self._decoders = decoders
        self._media_zip = media_zip
        self._on_meta = on_meta
        self._broken = False
        #: `_closed` (released) and `_busy` (a feed() runs) change under `_lock`: release()
        #: may come from the event loop while a feed() runs in a thread (module doc).
        self._lock = threading.Lock()
        self._closed = False
        self._busy = False
        #: The body so far while it may still be counted inline; None once it may not.
        self._kept: bytearray | None = bytearray()
        self._replay: bytes | None = None
        self._begin()

    def _begin(self) -> None:
        """Fresh reading state for the body from its first byte."""
        self._frames = FrameScanner()
        self._counter = _Counter(
            self._grant, MediaZipCheck(self._on_meta) if self._media_zip else None
        )
        self._decoder: zstandard.ZstdDecompressor | None = self._decoders.take()
        self._inflater = self._decoder.stream_writer(
            self._counter, write_size=PIECE, write_return_read=True
        )
        self.compressed = 0
        #: False once the body was refused (its decoder is gone).
        self.inflating = True

    @property
    def inflated(self) -> int:
        return self._counter.inflated

    def feed_inline(self, chunk: bytes) -> bool:
        """Counts `chunk` if that is cheap (module doc) and returns True; False: nothing is
        decided yet, pass the same `chunk` to `feed()`, in a thread."""
        kept = self._kept
        if kept is None or len(kept) + len(chunk) > INLINE_BYTES or self._broken:
            self._kept = None
            return False
        kept += chunk
        self._counter.cap = INLINE_OUT
        try:
            self.feed(chunk)
        except _Deferred:
            self._kept = None
            self._replay = bytes(kept)  # what feed() must inflate again, from a fresh start
            self._decoder = None  # stopped mid-frame: never back to the pool
            self._begin()
            return False
        return True

    def feed(self, chunk: bytes) -> None:
        """Counts `chunk` (module doc for the exceptions)."""
        with self._lock:
            if self._broken or self._closed:
                raise TooLarge("already refused or ended")
            self._busy = True
        if self._replay is not None:
            chunk, self._replay = self._replay, None  # `chunk` is its last part
        if self._kept is None:
            self._counter.cap = None
        self.compressed += len(chunk)
        limits = self.limits
        try:
            if self.compressed > limits.max_compressed:
                raise TooLarge(f"more than {limits.max_compressed} bytes on the wire")
            for at in range(0, len(chunk), SCAN_SLICE):
                piece = chunk[at : at + SCAN_SLICE]
                self._frames.max_blocks = FREE_BLOCKS + self.inflated // BLOCK_BYTES
                self._frames.feed(piece)
                self._inflate(piece)
            zip_check = self._counter.zip_check
            if zip_check is not None and self._frames.ended:
                zip_check.finish()  # the body's last byte: the zip must be whole
        except _Deferred:
            raise  # not a verdict: feed_inline() starts over in a thread
        except Exception:  # ours, or what `on_meta` raised (quota/guard.py: OverQuota)
            self._broken = True
            self._stop_inflating()
            raise
        finally:
            with self._lock:
                self._busy = False
                if self._closed:  # released meanwhile: its decoder never goes back
                    self._stop_inflating()

    def _inflate(self, chunk: bytes) -> None:
        try:
            self._inflater.write(chunk)
        except zstandard.ZstdError as exc:
            raise Unreadable(f"zstd data the gateway cannot decode: {exc}") from None

    def _stop_inflating(self, *, reuse: bool = False) -> None:
        """Frees the decoder and its window (up to 8 MiB): a refused body may still be
        drained for a while. `reuse`: the body went well, the decoder may serve another
        (decoders.py decides)."""
        if reuse and self.inflating and self._decoder is not None:
            self._decoders.give(self._decoder, self.inflated)
        self.inflating = False
        self._inflater = None  # type: ignore[assignment]
        self._decoder = None

    def _grant(self, inflated: int) -> int:
        """Room to inflate to `inflated` bytes and some more: the bytes granted."""
        own = self.limits.inflated_allowance(self.compressed)
        if inflated > own:
            raise TooLarge("inflates past the allowance")
        if self._closed:
            raise TooLarge("the request has ended")
        if self._share is None:
            return own
        return min(own, self._share.grant(inflated))

    def release(self) -> None:
        """Gives this body's share of the budget and its decoder back (its request has ended);
        idempotent."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._stop_inflating(reuse=not self._broken)
        if self._share is not None:
            self._share.release()
