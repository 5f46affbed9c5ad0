"""A request body kept whole in an unnamed temporary file before it goes to a worker.

    body = await spool(head, rest, folder)     # reads `rest` to its end; SpooledBody
    body.size, body.chunks() (async, from the start, each time), body.close()

Why (issue 16, fairness): a body that streams to a worker as it arrives holds that worker, one
of `workers.max_workers`, for as long as the client takes to send it (up to its deadline,
web/pace.py: 1.8 h for 100 MiB at the defaults). Enough accounts trickling bodies so fill every
worker and push other users' syncs into 503. A body spooled whole first holds no worker while
it arrives; the worker then reads it at loopback speed, with a `Content-Length`.

The file is created with `tempfile.TemporaryFile` in `folder` (the data folder: a disk, not a
tmpfs that would count against memory): on Linux `O_TMPFILE`, a file without a name, so
nothing is left behind even when the gateway is killed, and no other process can open it
(where the file system lacks `O_TMPFILE`, tempfile creates it 0600 and unlinks it at once).
What it costs is disk, not memory: the bytes of the bodies in flight, each at most the payload
cap, and together bounded by the inflation budget the meter holds them to (uploads/budget.py;
a zstd body is never much larger than what it inflates to). Writes and reads go to a thread
(`asyncio.to_thread`), so a slow disk never holds up the event loop. Errors: OSError (disk full,
folder missing) from `spool`; whatever `rest` raises passes, and the file is closed.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

#: Bytes read from the file per chunk sent upstream.
CHUNK = 256 * 1024


class SpooledBody:
    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from its first byte (a fresh pass each call: a retry sends it again)."""
        fd = self._file.fileno()
        offset = 0
        while offset < self.size:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, self.size - offset), offset)
            if not chunk:
                raise OSError("spooled body shorter than written")
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        self._file.close()


async def spool(head: bytes, rest: AsyncIterator[bytes], folder: Path) -> SpooledBody:
    file = await asyncio.to_thread(tempfile.TemporaryFile, dir=folder)
    size = 0
    try:
        await asyncio.to_thread(file.write, head)
        size = len(head)
        async for chunk in rest:
            await asyncio.to_thread(file.write, chunk)
            size += len(chunk)
        await asyncio.to_thread(file.flush)
    except BaseException:
        file.close()
        raise
    return SpooledBody(file, size)
