"""Idle zstd decoders kept for the next request body. Pure (no I/O).

Why: every proxied body is inflated by a `PayloadMeter` (payload.py) to be counted, and making
a `zstandard.ZstdDecompressor` costs about 10 µs (its decoding context and tables are allocated
and set up): 3.5 % of the gateway's event loop under 16 clients of `sync/meta` (py-spy,
issue 9), for bodies of a few dozen bytes. A decoder is reset whenever it starts a new body, so
one can serve body after body; it can never serve two bodies at once (their frames would mix,
measured: "Data corruption detected"), so a meter takes one for itself and gives it back when
its body is done.

Memory: a decoder keeps the window buffer of the largest frame it has seen (a body may declare
up to 8 MiB: frames.py `MAX_WINDOW`). So a decoder comes back only when its buffers are small
(`max_bytes`, `ZstdDecompressor.memory_size()`: an honest streamed frame with level 3's 2 MiB
window needs about 2.5 MiB) and its body inflated little (`max_inflated`: only pages written to
take memory), and at most `keep` wait idle. Idle decoders together hold at most about
`keep * (128 KiB + max_inflated)` of written memory.
"""

from __future__ import annotations

from collections import deque

import zstandard

KIB = 1024
MIB = 1024 * KIB


class DecoderPool:
    """`take()` a decoder for one body; `give()` it back when that body is done (or never)."""

    def __init__(self, keep: int = 16, max_bytes: int = 4 * MIB, max_inflated: int = 256 * KIB):
        self.keep = keep
        self.max_bytes = max_bytes
        self.max_inflated = max_inflated
        self._idle: deque[zstandard.ZstdDecompressor] = deque()

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> zstandard.ZstdDecompressor:
        """An idle decoder, or a new one. Its owner alone may use it until it gives it back."""
        try:
            return self._idle.pop()
        except IndexError:
            return zstandard.ZstdDecompressor()

    def give(self, decoder: zstandard.ZstdDecompressor, inflated: int) -> bool:
        """Back after a body that inflated to `inflated` bytes; True if it is kept for reuse,
        False if it is dropped (too big, too much written, or enough idle already)."""
        if (
            len(self._idle) >= self.keep
            or inflated > self.max_inflated
            or decoder.memory_size() > self.max_bytes
        ):
            return False
        self._idle.append(decoder)
        return True
