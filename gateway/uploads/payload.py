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

Bodies are zstd (the protocol). Where the stream stops being valid zstd, the meter stops
inflating and counts only compressed bytes from then on: the worker's decoder is the same
libzstd with the same default limits (window up to 2^27 bytes), so it stops inflating at the
same byte and refuses the body itself (400), as it always has; the meter never judges bodies it
need not.

Each body takes its decoder from a `DecoderPool` (decoders.py) and gives it back when its
request has ended, so small bodies do not each pay for a new one; a refused body or one that is
not zstd drops its decoder instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from gateway.uploads.budget import InflationBudget, OverBudget, Share
from gateway.uploads.decoders import DecoderPool

__all__ = ["DECODERS", "InflationBudget", "OverBudget", "PayloadLimits", "PayloadMeter", "TooLarge"]

MIB = 1024 * 1024
#: Inflated bytes handed to the counter at a time (and dropped).
PIECE = 64 * 1024
#: The stock server's cap on inflated bodies is this many times `MAX_SYNC_PAYLOAD_MEGS`
#: (rslib/src/sync/request/mod.rs, MAXIMUM_SYNC_PAYLOAD_BYTES_UNCOMPRESSED).
STOCK_INFLATED_FACTOR = 3
#: The decoders every meter takes from unless it is given a pool of its own.
DECODERS = DecoderPool()


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


class _Counter:
    """The decompressor's sink: counts inflated bytes; past `granted` it asks `grant` for more
    (which raises to stop the decompressor); then hands them to `watch`, if any (which may
    raise too)."""

    def __init__(
        self, grant: Callable[[int], int], watch: Callable[[bytes], None] | None = None
    ) -> None:
        self.inflated = 0
        self.granted = 0
        self._grant = grant
        self._watch = watch

    def write(self, data: bytes) -> int:
        self.inflated += len(data)
        if self.inflated > self.granted:
            self.granted = self._grant(self.inflated)
        if self._watch is not None:
            self._watch(data)
        return len(data)


class PayloadMeter:
    """One body's meter: `feed()` every chunk, in order, before forwarding it. `watch` sees the
    inflated body, in order, piece by piece (quota/guard.py reads a media upload's file sizes
    there); what it raises, `feed()` raises, and the body is refused."""

    def __init__(
        self,
        limits: PayloadLimits,
        budget: InflationBudget | None = None,
        owners: tuple[str, ...] = (),
        decoders: DecoderPool = DECODERS,
        watch: Callable[[bytes], None] | None = None,
    ) -> None:
        self.limits = limits
        self._share: Share | None = budget.share(owners) if budget is not None else None
        self._counter = _Counter(self._grant, watch)
        self._decoders = decoders
        self._decoder: zstandard.ZstdDecompressor | None = decoders.take()
        self._inflater = self._decoder.stream_writer(
            self._counter, write_size=PIECE, write_return_read=True
        )
        self.compressed = 0
        #: False once the body stopped being valid zstd (module doc).
        self.inflating = True
        self._broken = False

    @property
    def inflated(self) -> int:
        return self._counter.inflated

    def feed(self, chunk: bytes) -> None:
        """Counts `chunk`; `TooLarge`, `OverBudget` or what `watch` raised if the body may not
        go on (every later call raises `TooLarge`)."""
        if self._broken:
            raise TooLarge("already refused")
        self.compressed += len(chunk)
        limits = self.limits
        try:
            if self.compressed > limits.max_compressed:
                raise TooLarge(f"more than {limits.max_compressed} bytes on the wire")
            if self.inflating:
                self._inflate(chunk)
        except Exception:
            self._broken = True
            self._stop_inflating()
            raise

    def _inflate(self, chunk: bytes) -> None:
        try:
            self._inflater.write(chunk)
        except zstandard.ZstdError:
            self._stop_inflating()

    def _stop_inflating(self, *, reuse: bool = False) -> None:
        """Frees the decoder and its window (up to 128 MiB): a refused body may still be
        drained for a long time, at the client's pace. `reuse`: the body went well, the decoder
        may serve another (decoders.py decides)."""
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
        if self._share is None:
            return own
        return min(own, self._share.grant(inflated))

    def release(self) -> None:
        """Gives this body's share of the budget and its decoder back (its request has ended);
        idempotent."""
        self._stop_inflating(reuse=not self._broken)
        if self._share is not None:
            self._share.release()
