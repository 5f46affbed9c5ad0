"""The zip inside a media upload, checked as it inflates. Pure: the body's inflated bytes in,
in order, a verdict out (no I/O); reads headers with bounds, never extracts or inflates.

Why (issue 16, item 1): `msync/uploadChanges` carries a zip inside zstd, and the stock server
reads every entry its `_meta` list names into memory (rslib `sync/media/zip.rs`,
`unzip_and_validate_files`). A *deflated* entry of 100 MiB of zeros named 24 times was 331
bytes on the wire and grew the worker by about 2,700 MB. Stock clients write the zip with
`zip_files_for_upload` (same file; checked on the wire with the 26.9 client): stored entries
named "0", "1", ... (one per file), then `_meta`, a JSON list of `[filename, name in zip or
null]` pairs (null or "" for a deletion), then the central directory and its end record,
no extra fields, no comment. The server refuses more than `MAX_ENTRIES` pairs and reads at
most `MAX_META` bytes of `_meta` and `MAX_FILE` bytes of a file.

So a media upload passes only if its zip is what a stock client sends; `Refused` otherwise:

- local entries, one after another from byte 0: stored (method 0), not encrypted, sizes in the
  header (no data descriptor), compressed size = size <= `MAX_FILE` (`_meta`: `MAX_META`),
  each name once, at most `MAX_ENTRIES` files and one `_meta`;
- `_meta`: a JSON list of at most `MAX_ENTRIES` pairs of strings (second: string or null);
  every name in the zip is named once, no name twice, every named entry is in the zip;
- the central directory: one record per local entry, in order, with the same name, flags,
  method, CRC, sizes and the entry's real offset; then the end record with the right counts,
  size and offset, no multi-disk or zip64 values, no comment; not one byte after it. (The
  stock server's zip reader finds the end record by searching from the back: a comment holding
  a second end record pointed it to a central directory hidden in a stored entry.)

Every header is read into a buffer of at most `_MAX_HEADER` bytes; entry data is counted and
dropped, except `_meta` (at most `MAX_META` bytes). Sizes are bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

#: rslib sync/media/zip.rs: `entries.len() > 25` is refused.
MAX_ENTRIES = 25
#: ... `_meta` is read through `.take(50 * 1024)`.
MAX_META = 50 * 1024
#: rslib sync/media/mod.rs: MAX_INDIVIDUAL_MEDIA_FILE_SIZE.
MAX_FILE = 100 * 1024 * 1024
META = "_meta"
_LOCAL, _CENTRAL, _END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
_LOCAL_FIXED = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_CENTRAL_FIXED = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_END_FIXED = struct.Struct("<4sHHHHIIH")  # 22 bytes
#: Longest name, extra field or comment read (honest zips: names of a few bytes, none else).
_MAX_FIELD = 1024
_MAX_HEADER = _CENTRAL_FIXED.size + 3 * _MAX_FIELD
#: General purpose flags refused: encrypted (bit 0), sizes in a data descriptor (bit 3),
#: strong encryption (bit 6), masked local header (bit 13).
_BAD_FLAGS = 0x0001 | 0x0008 | 0x0040 | 0x2000


class Refused(Exception):
    """The zip is not what a stock client sends; `str()` says why (for the log and the 413)."""


class _Entry:
    __slots__ = ("name", "flags", "crc", "size", "offset")

    def __init__(self, name: str, flags: int, crc: int, size: int, offset: int) -> None:
        self.name, self.flags, self.crc, self.size, self.offset = name, flags, crc, size, offset


class MediaZipCheck:
    """`feed()` the inflated body in order, `finish()` at its end; `Refused` as soon as a rule
    breaks (module doc). `on_meta`, once `_meta` has passed the checks, gets the upload's
    `(filename, size in bytes, or None for a deletion)` pairs (quota/guard.py counts them); what
    it raises, `feed()` raises."""

    def __init__(
        self, on_meta: Callable[[list[tuple[str, int | None]]], None] | None = None
    ) -> None:
        self._on_meta = on_meta
        self._at = 0  # bytes of the zip seen
        self._entries: list[_Entry] = []
        self._names: set[str] = set()
        self._meta = bytearray()
        self._central = 0  # central records seen
        self._central_at = -1
        self._done = False
        self._buf = bytearray()
        self._need = 4  # the next header's signature
        self._header: bytes | None = None  # a header whose variable part is being read
        self._skip = 0  # entry data still to pass over
        self._collect = False  # the data is `_meta`'s

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._done:
                raise Refused("data after the end of the zip")
            if self._skip:
                step = min(self._skip, len(view))
                if self._collect:
                    self._meta += view[:step]
                self._skip -= step
                self._at += step
                view = view[step:]
                continue
            step = min(self._need - len(self._buf), len(view))
            self._buf += view[:step]
            self._at += step
            view = view[step:]
            if len(self._buf) == self._need:
                self._parse()

    def finish(self) -> None:
        if not self._done:
            raise Refused("the zip ends early")

    def _parse(self) -> None:
        buf = bytes(self._buf)
        if self._header is None and len(buf) == 4:
            fixed = {_LOCAL: _LOCAL_FIXED, _CENTRAL: _CENTRAL_FIXED, _END: _END_FIXED}.get(buf)
            if fixed is None:
                raise Refused("not a zip record where one should start")
            self._need = fixed.size
            return
        if self._header is None:
            self._header = buf
            variable = self._variable_size(buf)
            if variable:
                self._need += variable
                return
        self._header = None
        self._buf = bytearray()
        self._need = 4
        kind = buf[:4]
        if kind == _LOCAL:
            self._local(buf)
        elif kind == _CENTRAL:
            self._central_record(buf)
        else:
            self._end(buf)

    def _variable_size(self, fixed: bytes) -> int:
        if fixed[:4] == _LOCAL:
            fields = _LOCAL_FIXED.unpack_from(fixed)[-2:]
        elif fixed[:4] == _CENTRAL:
            fields = _CENTRAL_FIXED.unpack_from(fixed)[10:13]
        else:
            fields = _END_FIXED.unpack_from(fixed)[-1:]
            if fields[0]:  # the stock server's zip reader would search it for its end record
                raise Refused("a zip comment")
        if max(fields) > _MAX_FIELD:
            raise Refused("a zip name, extra field or comment too long")
        return sum(fields)

    def _local(self, buf: bytes) -> None:
        if self._central_at >= 0:
            raise Refused("a zip entry after the central directory")
        _, _, flags, method, _, _, crc, csize, size, nlen, _ = _LOCAL_FIXED.unpack_from(buf)
        offset = self._at - len(buf)
        name = self._name(buf[30 : 30 + nlen])
        self._check(name, flags, method, csize, size)
        if name in self._names:
            raise Refused("a zip entry name twice")
        files = len(self._entries) - (META in self._names)
        if name != META and files >= MAX_ENTRIES:
            raise Refused(f"more than {MAX_ENTRIES} files in the zip")
        self._names.add(name)
        self._entries.append(_Entry(name, flags, crc, size, offset))
        self._skip, self._collect = size, name == META

    def _check(self, name: str, flags: int, method: int, csize: int, size: int) -> None:
        if method != 0:
            raise Refused("a zip entry that is not stored")
        if flags & _BAD_FLAGS:
            raise Refused("a zip entry encrypted or with a data descriptor")
        if csize != size:
            raise Refused("a stored zip entry whose sizes differ")
        if size > (MAX_META if name == META else MAX_FILE):
            raise Refused("a zip entry too large")

    def _name(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("a zip entry name that is not UTF-8") from None

    def _central_record(self, buf: bytes) -> None:
        if self._central_at < 0:
            self._central_at = self._at - len(buf)
            if META not in self._names:
                raise Refused("no _meta in the zip")
            self._check_meta()
        fields = _CENTRAL_FIXED.unpack_from(buf)
        flags, method, crc, csize, size, nlen = fields[3], fields[4], *fields[7:11]
        disk, offset = fields[13], fields[16]
        if self._central >= len(self._entries):
            raise Refused("more central directory records than zip entries")
        entry = self._entries[self._central]
        self._central += 1
        name = self._name(buf[46 : 46 + nlen])
        self._check(name, flags, method, csize, size)
        if (name, flags, crc, size, offset, disk) != (
            entry.name,
            entry.flags,
            entry.crc,
            entry.size,
            entry.offset,
            0,
        ):
            raise Refused("the central directory does not match the zip entries")

    def _end(self, buf: bytes) -> None:
        _, disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = _END_FIXED.unpack_from(buf)
        count = len(self._entries)
        start = self._at - len(buf)
        if (disk, cd_disk, on_disk, total) != (0, 0, count, count) or self._central != count:
            raise Refused("the zip's end record does not match its entries")
        if (cd_offset, cd_size) != (self._central_at, start - self._central_at):
            raise Refused("the zip's end record does not match its central directory")
        self._done = True

    def _check_meta(self) -> None:
        try:
            pairs = json.loads(bytes(self._meta))
        except (ValueError, RecursionError):  # nested deeper than the parser goes
            raise Refused("_meta is not JSON") from None
        if not isinstance(pairs, list) or len(pairs) > MAX_ENTRIES:
            raise Refused(f"_meta is not a list of at most {MAX_ENTRIES} pairs")
        named: set[str] = set()
        for pair in pairs:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not (pair[1] is None or isinstance(pair[1], str))
            ):
                raise Refused("_meta holds something else than [filename, name in zip] pairs")
            if not pair[1]:
                continue  # a deletion
            if pair[1] in named or pair[1] == META:
                raise Refused("_meta names a zip entry twice")
            named.add(pair[1])
        if named != self._names - {META}:
            raise Refused("_meta and the zip's entries do not match")
        if self._on_meta is not None:
            sizes = {entry.name: entry.size for entry in self._entries}
            self._on_meta([(pair[0], sizes[pair[1]] if pair[1] else None) for pair in pairs])
