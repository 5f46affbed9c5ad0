"""A request body's pace: the idle timeout and the minimum rate, decided without I/O.

A client that sends headers and then nothing, or 100 KiB and then a byte a second, would hold
its connection and, for a sync request, its account's worker, for ever. Rules (settings
`server.body_idle_timeout_seconds` and `server.min_body_bytes_per_second`):

- no byte for `idle_timeout` seconds: stalled (Anki itself gives up after 60 s without
  progress, anki-sync-protocol.md, so an honest client never gets here);
- fewer than `min_rate * idle_timeout` bytes within one window of `idle_timeout` seconds
  (consecutive windows from the start of the body): stalled. A trickle never trips the idle
  rule; this one stops it at the end of its window.

So a stalled body is noticed at most `idle_timeout` seconds after its last useful progress.
Times are seconds on any monotonic clock (the reader passes `loop.time()`); sizes are bytes.
The reader waits for the next chunk until `deadline()`, reports what arrived (possibly nothing)
with `feed()`, and gives up when `stalled` is true. For answers the same rules measure how
fast the client takes them; `skip()` leaves out the time the worker took to produce them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pacing:
    """The settings; `start()` makes the state for one body."""

    idle_timeout: float = 60.0
    min_rate: float = 1024.0

    def start(self, now: float) -> Pace:
        return Pace(self, now)


class Pace:
    def __init__(self, pacing: Pacing, now: float) -> None:
        self._pacing = pacing
        self._last_byte = now
        self._window_start = now
        self._window_bytes = 0
        #: True once a rule was broken; stays true.
        self.stalled = False

    def deadline(self) -> float:
        """The latest time to wake up and `feed()` again, even if nothing arrived."""
        idle = self._pacing.idle_timeout
        return min(self._last_byte + idle, self._window_start + idle)

    def skip(self, seconds: float) -> None:
        """Leaves `seconds` out of both rules: time spent waiting for someone else (the worker,
        while the client takes an answer)."""
        self._last_byte += seconds
        self._window_start += seconds

    def feed(self, size: int, now: float) -> bool:
        """`size` bytes arrived at `now` (0: a wake-up without data); returns `stalled`."""
        idle = self._pacing.idle_timeout
        if size:
            self._last_byte = now
            self._window_bytes += size
        elif now - self._last_byte >= idle:
            self.stalled = True
        if now - self._window_start >= idle:
            if self._window_bytes < self._pacing.min_rate * idle:
                self.stalled = True
            self._window_start, self._window_bytes = now, 0
        return self.stalled
