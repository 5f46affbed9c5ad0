"""The file sizes in a media upload (`msync/uploadChanges`), read as its zip inflates. Pure:
the body's inflated bytes in, in order; sizes out (no I/O); never extracts anything.

What a stock client sends (rslib `sync/media/zip.rs`, `zip_files_for_upload`; seen on the wire
with the 26.9 client): *stored* entries named "0", "1", ... (one per file, at most 25), then
`_meta`, a JSON list of `[filename, name in zip or null]` pairs (null or "": a deletion), then
the central directory. So each file's size is in its local header, before its data, and the
files' names come with `_meta`, before the central directory.

    MediaUpload(on_meta)
        .feed(data)     on_meta(changes) once `_meta` is read: [(filename, size or None)],
                        None for a deletion; `NotStock` for anything a stock client never sends
                        (a compressed or encrypted entry, sizes after the data, a `_meta` that
                        is not such a list, no `_meta` before the central directory)

Sizes are bytes. `_meta` is read into memory up to `MAX_META` bytes (the stock server reads
at most that much of it).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

META = "_meta"
#: rslib sync/media/zip.rs reads `_meta` through `.take(50 * 1024)`.
MAX_META = 50 * 1024
_LOCAL, _CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
_LOCAL_FIXED = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
#: Flags a stock client never sets: encrypted (bit 0), sizes in a data descriptor (bit 3).
_BAD_FLAGS = 0x0001 | 0x0008
_MAX_NAME = 1024


class NotStock(Exception):
    """The upload is not a zip as stock clients write it; `str()` says why (for the log)."""


class MediaUpload:
    def __init__(self, on_meta: Callable[[list[tuple[str, int | None]]], None]) -> None:
        self._on_meta = on_meta
        self._sizes: dict[str, int] = {}
        self._buf = bytearray()
        self._need = _LOCAL_FIXED.size  # bytes of the next header still to come
        self._fixed: tuple | None = None
        self._skip = 0
        self._meta: bytearray | None = None
        self._done = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._done:
            if self._skip:
                step = min(self._skip, len(view))
                if self._meta is not None:
                    self._meta += view[:step]
                self._skip -= step
                view = view[step:]
                if not self._skip and self._meta is not None:
                    self._read_meta()
                continue
            step = min(self._need - len(self._buf), len(view))
            self._buf += view[:step]
            view = view[step:]
            if len(self._buf) == self._need:
                self._header()

    def _header(self) -> None:
        if self._fixed is None:
            if self._buf[:4] == _CENTRAL:
                raise NotStock("no _meta before the central directory")
            if self._buf[:4] != _LOCAL:
                raise NotStock("not a zip entry where one should start")
            self._fixed = _LOCAL_FIXED.unpack_from(self._buf)
            name_len, extra_len = self._fixed[-2:]
            if name_len > _MAX_NAME or extra_len > _MAX_NAME:
                raise NotStock("a zip name or extra field too long")
            if name_len + extra_len:
                self._need += name_len + extra_len
                return
        _, _, flags, method, _, _, _, csize, size, name_len, _ = self._fixed
        raw = bytes(self._buf[_LOCAL_FIXED.size : _LOCAL_FIXED.size + name_len])
        self._fixed, self._buf, self._need = None, bytearray(), _LOCAL_FIXED.size
        if method != 0 or flags & _BAD_FLAGS or csize != size:
            raise NotStock("a zip entry that is not stored with its sizes in its header")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NotStock("a zip entry name that is not UTF-8") from None
        if name == META:
            if size > MAX_META:
                raise NotStock("_meta too large")
            self._meta = bytearray()
            if size == 0:
                self._read_meta()
        else:
            self._sizes[name] = size
        self._skip = size

    def _read_meta(self) -> None:
        try:
            pairs = json.loads(bytes(self._meta or b""))
        except ValueError:
            raise NotStock("_meta is not JSON") from None
        if not isinstance(pairs, list):
            raise NotStock("_meta is not a list")
        changes: list[tuple[str, int | None]] = []
        for pair in pairs:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and (pair[1] is None or isinstance(pair[1], str))
            ):
                raise NotStock("_meta holds something else than [filename, name] pairs")
            if not pair[1]:
                changes.append((pair[0], None))
            elif pair[1] in self._sizes:
                changes.append((pair[0], self._sizes[pair[1]]))
            else:
                raise NotStock("_meta names a file the zip does not hold before it")
        self._done = True  # the central directory is the worker's (and the body checks') job
        self._meta = None
        self._on_meta(changes)
