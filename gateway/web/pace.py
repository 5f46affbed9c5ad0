"""A body's pace: the idle timeout, the minimum rate and the deadline, decided without I/O.

A client that sends headers and then nothing, or 100 KiB and then a byte a second, would hold
its connection and, for a sync request, its account's worker, for ever. Rules (settings
`server.body_idle_timeout_seconds` = `idle`, `server.min_body_bytes_per_second` = `min_rate`,
`server.min_body_average_bytes_per_second` = `average`):

- idle: no byte for `idle` seconds (Anki itself gives up after 60 s without progress,
  anki-sync-protocol.md, so an honest client never gets here);
- window: fewer than `min_rate * idle` bytes in the last `idle` seconds, at any moment from
  `idle` seconds after the start (a sliding window, kept as marks at most `idle / MARKS`
  seconds apart). A burst buys no time: 100 KiB and then a byte a second is stopped `idle`
  seconds after the burst (it was 2 x `idle` with windows one after another, issue 16 item 3);
- deadline: the body must end by `start + idle + size / average`, where `size` is what has
  arrived so far. The deadline grows with the body at the average rate, so a trickle just
  above `min_rate` still ends there: at 2 KiB/s with `average` 16 KiB/s it is stopped after
  `idle * 8/7` seconds, where it used to run until its size cap (cap / rate: 28 h at the
  defaults). The cap is the size limit: a body of at most `workers.max_payload_megs` ends
  within `idle + max_payload / average` seconds (1.8 h at the defaults, 100 MiB at 16 KiB/s).

So every body ends by its deadline, and a stalled one is noticed at most `idle * (1 + 1/MARKS)`
seconds after its last useful progress. Times are seconds on any monotonic clock (the reader
passes `loop.time()`); sizes are bytes; a rate of 0 turns its rule off. The reader waits for
the next chunk until `deadline()`, reports what arrived (possibly nothing) with `feed()`, and
gives up when `stalled` is true. For answers the same rules measure how fast the client takes
them; `skip()` leaves out the time the worker took to produce them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: The sliding window keeps a mark at most every `idle / MARKS` seconds (module doc).
MARKS = 16


@dataclass(frozen=True)
class Pacing:
    """The settings; `start()` makes the state for one body."""

    idle_timeout: float = 60.0
    min_rate: float = 1024.0
    min_average_rate: float = 16384.0

    def start(self, now: float) -> Pace:
        return Pace(self, now)


class Pace:
    def __init__(self, pacing: Pacing, now: float) -> None:
        self._pacing = pacing
        self._start = now
        self._last_byte = now
        self._total = 0
        #: (time, bytes so far): the bytes that had arrived by each time (the window rule).
        self._marks: deque[tuple[float, int]] = deque([(now, 0)])
        #: True once a rule was broken; stays true.
        self.stalled = False

    def deadline(self) -> float:
        """The latest time to wake up and `feed()` again, even if nothing arrived."""
        p = self._pacing
        at = self._last_byte + p.idle_timeout
        if p.min_rate > 0:
            at = min(at, self._window_end())
        if p.min_average_rate > 0:
            at = min(at, self._start + p.idle_timeout + self._total / p.min_average_rate)
        return at

    def _window_end(self) -> float:
        """When the last `idle` seconds will hold too few bytes if nothing more arrives."""
        idle = self._pacing.idle_timeout
        floor = self._total - self._pacing.min_rate * idle
        for at, seen in self._marks:
            if seen > floor:
                return max(self._start, at) + idle
        # Only bytes that arrived since the last mark count: they came by the last byte.
        return max(self._start, self._last_byte) + idle

    def skip(self, seconds: float) -> None:
        """Leaves `seconds` out of every rule: time spent waiting for someone else (the worker,
        while the client takes an answer)."""
        self._start += seconds
        self._last_byte += seconds
        self._marks = deque((at + seconds, seen) for at, seen in self._marks)

    def feed(self, size: int, now: float) -> bool:
        """`size` bytes arrived at `now` (0: a wake-up without data); returns `stalled`."""
        if size:
            self._last_byte = now
            self._total += size
            self._mark(now)
        if now >= self.deadline():
            self.stalled = True
        return self.stalled

    def _mark(self, now: float) -> None:
        idle = self._pacing.idle_timeout
        marks = self._marks
        if now - marks[-1][0] >= idle / MARKS:
            marks.append((now, self._total))
        # Marks older than the window are needed only up to the last one before it.
        while len(marks) > 1 and marks[1][0] <= now - idle:
            marks.popleft()
