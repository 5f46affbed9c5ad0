"""An answer on its way from a worker to a client: taken at the worker's speed, given at the
client's.

    relay = Relay(folder, memory=MEMORY)    # folder None: never to disk (below)
    await relay.put(chunk) ...; relay.end() or relay.fail(exc)     # the worker's side
    async for chunk in relay.chunks(): ...                         # the client's side
    relay.close()                                                  # either side, when done

Why (issue 16): a proxied answer that streams at the client's pace holds its worker (and its
lease, one of `workers.max_workers`) for as long as the client takes to read it; a client that
reads a big `sync/download` or `msync/downloadFiles` slowly, within the pacing rules
(web/pace.py: up to 1.8 h for 100 MiB at the defaults), so ties up a worker slot. Through a
relay the worker's side ends as soon as the worker has answered, while the client's side goes
on from what is held here.

What is held: up to `memory` bytes the client has not taken yet in memory; past that, what
comes until the client has caught up again goes to an unnamed temporary file in `folder` (as
web/spool.py: `O_TMPFILE` in the data folder, gone when closed or when the gateway dies;
writes and reads in a thread), `batch` bytes at a time: so at most `memory` + `batch` bytes
(and a chunk) are in memory, and a client that falls behind by less than that and catches up
never makes it touch the disk. Without
a folder, `put()` waits instead until the client has taken enough (the answer then holds its
worker as long as the client is slow).

Errors: `put()` passes OSError (disk full); `chunks()` raises the error given to `fail()` once
the bytes before it are taken, and OSError from the file. `put()` after `close()` drops the
chunk and returns False (the client side gave up: stop reading the worker's answer).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

#: Bytes read from the file per chunk given to the client.
CHUNK = 256 * 1024
#: Bytes written to the file at a time (one thread hop each).
BATCH = 1024 * 1024


class Relay:
    def __init__(self, folder: Path | None, *, memory: int, batch: int = BATCH) -> None:
        self._folder = folder
        self._memory_limit = memory
        self._batch = batch
        #: Bytes on their way to the file, written `batch` at a time (the client may take them
        #: from here first: then they never touch the disk).
        self._pending = bytearray()
        self._held: deque[bytes] = deque()
        self._held_bytes = 0
        self._file: IO[bytes] | None = None
        self._written = 0  # bytes in the file
        self._read = 0  # bytes of the file given to the client
        self._ended = False
        self._error: BaseException | None = None
        self._closed = False
        self._busy = 0  # file operations in a thread: the file is closed only after them
        self._changed = asyncio.Event()  # something for the client's side (or the end)
        self._taken = asyncio.Event()  # the client took something (or gave up)

    @property
    def on_disk(self) -> int:
        """Bytes of the answer that went through the file."""
        return self._written

    async def put(self, chunk: bytes) -> bool:
        if self._closed:
            return False
        # While the client still has bytes of the file to take, everything after goes there
        # too (it takes what is in memory first: older): the order is kept.
        to_file = bool(self._pending) or self._read < self._written
        if not to_file and self._held_bytes + len(chunk) > self._memory_limit:
            if self._folder is not None:
                to_file = True
            else:
                while self._held_bytes and self._held_bytes + len(chunk) > self._memory_limit:
                    self._taken.clear()
                    await self._taken.wait()
                    if self._closed:
                        return False
        if to_file:
            self._pending += chunk
            if len(self._pending) >= self._batch:
                await self._flush()
        else:
            self._held.append(chunk)
            self._held_bytes += len(chunk)
        self._changed.set()
        return not self._closed

    async def _flush(self) -> None:
        data, self._pending = bytes(self._pending), bytearray()
        if self._file is None:
            self._file = await asyncio.to_thread(tempfile.TemporaryFile, dir=self._folder)
        await self._io(os.pwrite, data, self._written)
        self._written += len(data)

    def end(self) -> None:
        self._ended = True
        self._changed.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._changed.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The answer's chunks in order, as they come; once."""
        while not self._closed:
            if self._held:
                chunk = self._held.popleft()
                self._held_bytes -= len(chunk)
                self._taken.set()
                yield chunk
            elif self._file is not None and self._read < self._written:
                size = min(CHUNK, self._written - self._read)
                chunk = await self._io(os.pread, size, self._read)
                if not chunk:
                    raise OSError("relayed answer shorter than written")
                self._read += len(chunk)
                yield chunk
            elif self._pending and self._read == self._written:
                # Caught up with the file: the bytes not written yet come from memory.
                chunk, self._pending = bytes(self._pending), bytearray()
                self._taken.set()
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._ended:
                return
            else:
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        """Drops what is held; the worker's side stops (`put()` returns False). Idempotent."""
        self._closed = True
        self._held.clear()
        self._held_bytes = 0
        self._pending = bytearray()
        self._taken.set()
        self._changed.set()
        self._close_file()

    async def _io(self, operation: Callable[[int, Any, int], Any], *args: Any) -> Any:
        # The file's descriptor must not be closed (and its number reused) under a thread.
        assert self._file is not None
        self._busy += 1
        try:
            return await asyncio.to_thread(operation, self._file.fileno(), *args)
        finally:
            self._busy -= 1
            self._close_file()

    def _close_file(self) -> None:
        if self._closed and not self._busy and self._file is not None:
            self._file.close()
