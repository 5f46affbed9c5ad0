"""Which zstd bodies the gateway lets through: exactly one modern zstd frame. Pure: bytes in,
a verdict out (no I/O); reads frame and block headers only, never inflates.

Why (issue 16, item 2): the worker's zstd library is built with the legacy decoders (formats
v0.5-v0.7) and skips skippable frames; the gateway's is not. A body the gateway cannot inflate
was counted by its compressed bytes only: a 19 KB v0.7 frame inflated to 299 MiB in a worker.
So the meter (payload.py) passes a body only if it is what a stock client sends (measured with
the 26.9 client and rslib's `zstd` encoder: one frame, magic 0xFD2FB528, no dictionary, no
content size, a 2 MiB window, no checksum) and refuses everything else with `Unreadable`:

- a first frame with any other magic number: legacy formats (v0.1-v0.7), skippable
  frames (0x184D2A50-0x184D2A5F), anything else;
- a frame that needs a dictionary, sets the reserved header bit, declares a window larger than
  `MAX_WINDOW` (8 MiB), uses the reserved block type or a block larger than the format allows
  (RFC 8878 §3.1.1.2: 128 KiB);
- any byte after the end of the first frame (a second frame of any kind, or trailing data).

A body that ends inside its frame is not refused here: the worker cannot decode it either.

Cost: the scanner is pure Python and holds the GIL for about 1.6 µs a block, and a block can be
3 bytes that inflate to nothing (an empty raw block): 10 MiB of them held the GIL for 5.5 s
and raised other users' latency tenfold. So the caller bounds the blocks (`max_blocks`, set
before each `feed()`: payload.py allows one per few KiB the body has inflated to), and the scanner
refuses the first block past it (`Unreadable`); a stock encoder writes blocks of 128 KiB.
Sizes are bytes; `feed()` takes the body's bytes in order, in chunks of any size.
"""

from __future__ import annotations

MAGIC = 0xFD2FB528
#: The largest window a frame may declare. The gateway's decoder holds up to the window of
#: what a body inflated for as long as the body is in flight: a frame declaring libzstd's own
#: limit (2^27, ZSTD_WINDOWLOG_LIMIT_DEFAULT) grew the gateway by 120 MiB per body. Stock
#: clients stream at level 3 and declare 2 MiB (measured: every body of the 26.09.3 client,
#: login, meta, chunks, uploads, media zips); 8 MiB leaves room for another zstd version's or
#: level's streaming window (measured with zstandard 0.25: levels 3-8 declare 2 MiB, levels
#: up to 19 at most 8 MiB) and costs at most that per body. Larger: 415, like any other
#: frame a stock client never writes.
MAX_WINDOW = 8 * 1024 * 1024
#: RFC 8878 §3.1.1.2.3: Block_Maximum_Size.
MAX_BLOCK = 128 * 1024
_RAW, _RLE, _COMPRESSED = 0, 1, 2
#: v0.1 (0xFD2FB51E), v0.2-v0.7 (0xFD2FB522-0xFD2FB527).
_LEGACY = {0xFD2FB51E, *range(0xFD2FB522, 0xFD2FB528)}
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class Unreadable(Exception):
    """The body is not one modern zstd frame; `str()` says why (for the log, never secret)."""


def _describe(magic: int) -> str:
    if magic in _LEGACY:
        return f"a legacy zstd frame (v0.{max(1, magic - 0xFD2FB520)})"
    if magic in _SKIPPABLE:
        return "a skippable zstd frame"
    return f"not a zstd frame (magic {magic:#010x})"


class FrameScanner:
    """Follows one body's frame header and block headers; `Unreadable` on the first byte that
    breaks a rule (module doc). `ended`: the frame is complete."""

    def __init__(self) -> None:
        self.ended = False
        self._need = 5  # header bytes to read next: the magic and the frame header descriptor
        self._pending = b""  # a header's first bytes, when it spans two chunks
        self._state = "magic"
        self._skip = 0  # block content (or checksum) bytes still to pass over
        self._checksum = False
        self._single = False
        self._fcs_size = 0
        self.blocks = 0
        #: The most blocks the body may have so far (module doc, "Cost"); None: no bound.
        self.max_blocks: int | None = None

    def feed(self, data: bytes) -> None:
        if self._pending:
            data, self._pending = self._pending + data, b""
        at, size = 0, len(data)
        while at < size:
            if self.ended:
                raise Unreadable("data after the end of the zstd frame")
            if self._skip:
                step = min(self._skip, size - at)
                self._skip -= step
                at += step
                if not self._skip and self._state == "checksum":
                    self.ended = True
                continue
            need = self._need
            if size - at < need:
                self._pending = bytes(data[at:])
                return
            self._advance(data[at : at + need])
            at += need

    def _advance(self, h: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(h[:4], "little")
            if magic != MAGIC:
                raise Unreadable(_describe(magic))
            self._descriptor(h[4])
        elif self._state == "frame header":
            self._window(h)
            self._next_block()
        else:
            self._block(int.from_bytes(h, "little"))

    def _descriptor(self, fhd: int) -> None:
        fcs_flag, single = fhd >> 6, bool(fhd & 0x20)
        if fhd & 0x08:
            raise Unreadable("zstd frame header with the reserved bit set")
        if fhd & 0x03:
            raise Unreadable("zstd frame that needs a dictionary")
        self._checksum = bool(fhd & 0x04)
        fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        self._single, self._fcs_size = single, fcs_size
        self._state = "frame header"
        self._need = (0 if single else 1) + fcs_size  # never 0: single segment has 1+

    def _window(self, h: bytes) -> None:
        if self._single:
            window = int.from_bytes(h[: self._fcs_size], "little")
            window += 256 if self._fcs_size == 2 else 0  # RFC 8878 §3.1.1.1.4
        else:
            exponent, mantissa = h[0] >> 3, h[0] & 0x07
            base = 1 << (10 + exponent)
            window = base + (base // 8) * mantissa
        if window > MAX_WINDOW:
            raise Unreadable(f"zstd window of {window} bytes")

    def _next_block(self) -> None:
        self._state = "block"
        self._need = 3

    def _block(self, header: int) -> None:
        kind, size = (header >> 1) & 0x03, header >> 3
        if kind not in (_RAW, _RLE, _COMPRESSED):
            raise Unreadable("zstd block of the reserved type")
        if size > MAX_BLOCK:
            raise Unreadable(f"zstd block of {size} bytes")
        self.blocks += 1
        if self.max_blocks is not None and self.blocks > self.max_blocks:
            raise Unreadable(f"more zstd blocks ({self.blocks}) than its inflated size needs")
        self._skip = 1 if kind == _RLE else size
        if header & 1:  # the last block
            self._state = "checksum"
            self._skip += 4 if self._checksum else 0
            if not self._skip:
                self.ended = True
