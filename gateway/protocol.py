"""The Anki sync protocol, as far as the gateway speaks it. Pure: bytes in, values out.

Facts (anki-sync-protocol.md, measured against the 26.9 client and server):
- Every modern request carries `anki-sync: {"v":11,"k":"<hkey>","c":"<client>","s":"<session>"}`;
  all four fields are required. Requests without it come from clients older than 2.1.57.
- Bodies are zstd frames, usually without a content size, sent chunked.
- `GET msync/begin?k=<hkey>&v=<client>` (the legacy media start) takes its key from the query,
  not from the header: the stock server answers 403 to a query key it does not know (measured).
- Login is `POST sync/hostKey` with zstd(JSON {"u": username, "p": password}); the answer is
  zstd(JSON {"key": hkey}) with `anki-original-size: <uncompressed length>`, which every 2xx needs.
"""

from __future__ import annotations

import hmac
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard

from gateway.errors import BadRequest, ClientTooOld, PayloadTooLarge

SYNC_HEADER = "anki-sync"
ORIGINAL_SIZE = "anki-original-size"

#: A login body is ~100 bytes; these caps refuse anything else before it costs memory or CPU.
MAX_LOGIN_COMPRESSED = 4096
MAX_LOGIN_INFLATED = 4096
MAX_SYNC_HEADER = 1024
#: Sync protocol versions the stock server accepts (rslib/src/sync/version.rs: 8-10 legacy
#: framing, 11 current). Anything else gets 400 from it on every method, `hostKey` included.
SYNC_VERSION_MIN = 8
SYNC_VERSION_MAX = 11
# Cognito's own limits: usernames up to 128 characters, passwords up to 256.
MAX_USERNAME = 128
MAX_PASSWORD = 256

#: The proxied methods that only read (`<kind>/<method>`): sending one twice changes nothing
#: on the server. Every sync method is a POST, so HTTP's own idempotent methods (RFC 9110
#: §9.2.2) say nothing here; this list is by meaning. Everything else writes, moves a session
#: on, or is not known not to: `start` (aborts another device's sync), `applyGraves`,
#: `applyChanges`, `chunk` (each call hands out the *next* chunk), `applyChunk`,
#: `sanityCheck2`, `finish`, `abort`, `upload`, `download`, `uploadChanges`. Unknown methods
#: count as writes.
READ_ONLY_METHODS = frozenset(
    {"sync/meta", "msync/begin", "msync/mediaChanges", "msync/downloadFiles", "msync/mediaSanity"}
)

#: The stock server's answer to `sync/upload` of a collection over its limit: 200 and this text
#: (zstd, with `anki-original-size`), which Anki shows as it is (measured with the 26.9 client
#: and server, MAX_SYNC_PAYLOAD_MEGS=1 and a 4 MB collection; rslib/src/sync/collection/upload.rs).
UPLOAD_TOO_LARGE = b"collection exceeds size limit"

_zstd_compressor = zstandard.ZstdCompressor(level=3)
_zstd_decompressor = zstandard.ZstdDecompressor()


@dataclass(frozen=True)
class SyncHeader:
    version: int
    key: str
    client: str
    session: str

    def for_upstream(self, key: str) -> str:
        """The same header with another host key, as the server expects it (compact JSON)."""
        data = {"v": self.version, "k": key, "c": self.client, "s": self.session}
        return json.dumps(data, separators=(",", ":"))


def parse_sync_header(raw: str | None) -> SyncHeader:
    if raw is None:
        raise ClientTooOld("request without anki-sync header (legacy client)")
    if len(raw) > MAX_SYNC_HEADER:
        raise BadRequest("anki-sync header too long")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest("anki-sync header is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("anki-sync header is not a JSON object")
    version, key, client, session = data.get("v"), data.get("k"), data.get("c"), data.get("s")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadRequest("anki-sync header: v must be an integer")
    if not SYNC_VERSION_MIN <= version <= SYNC_VERSION_MAX:
        # The stock server answers 400 to every method for these (measured: v 0, 7, 12, 999);
        # the gateway must not hand out a key at login that every later request is refused with.
        raise BadRequest(f"anki-sync header: unsupported sync version {version}")
    if not (isinstance(key, str) and isinstance(client, str) and isinstance(session, str)):
        raise BadRequest("anki-sync header: k, c and s must be strings")
    if not key.isascii() or not key.isprintable():
        raise BadRequest("anki-sync header: k must be printable ASCII")
    if not session.isascii() or not session.isprintable():
        # Stock clients send a short random id of letters and digits (rslib's
        # `simple_session_id`). The session is kept in the account's lease file
        # (workers/syncsession/store.py), where JSON would escape each other character to 6
        # or 12 bytes.
        raise BadRequest("anki-sync header: s must be printable ASCII")
    return SyncHeader(version, key, client, session)


def check_query_keys(keys: Iterable[str], admitted: str) -> None:
    """Raises `BadRequest` unless every host key in a request's query (`k`, each value) is the
    `admitted` one, from the anki-sync header. The stock server reads `GET msync/begin`'s key
    from the query (module doc): another key there would reach the worker unchecked and get
    its 403, which the proxy must take for a stale worker (forwarding/upstream.py). Stock clients
    since 2.1.57 send no query at all."""
    wanted = admitted.encode()
    for key in keys:
        if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), wanted):
            raise BadRequest("a host key in the query that is not the anki-sync header's")


def may_send_twice(method: str) -> bool:
    """True if `method` (`"sync/meta"`) may be sent again when it is unknown whether the worker
    got it the first time: only read-only methods (`READ_ONLY_METHODS`)."""
    return method in READ_ONLY_METHODS


def inflate(body: bytes, cap: int) -> bytes:
    """Decompress one zstd body, refusing it as soon as the output would pass `cap` bytes.

    Streaming, because the frame usually carries no content size; reading `cap + 1` bytes means
    a zstd bomb costs at most `cap + 1` bytes of output, never its full inflated size.
    """
    try:
        with _zstd_decompressor.stream_reader(io.BytesIO(body)) as reader:
            data = reader.read(cap + 1)
    except zstandard.ZstdError as exc:
        raise BadRequest("body is not valid zstd") from exc
    if len(data) > cap:
        raise PayloadTooLarge("body inflates past the cap")
    return data


def decode_login(body: bytes) -> tuple[str, str]:
    """`(username, password)` from a hostKey body; BadRequest for anything malformed.

    The username is stripped (desktop and AnkiDroid strip it too); the password is kept as typed.
    Empty strings are well-formed: the stock server answers them 403 ("email or password
    incorrect"), and so does the identity provider here; a 400 would make Anki say "please use
    Check Database".
    """
    if len(body) > MAX_LOGIN_COMPRESSED:
        raise PayloadTooLarge("login body too large")
    try:
        data = json.loads(inflate(body, MAX_LOGIN_INFLATED))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("login body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("login body is not a JSON object")
    username, password = data.get("u"), data.get("p")
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadRequest("login body needs string fields u and p")
    return username.strip(), password


def encode_login(username: str, password: str) -> bytes:
    return compress(json.dumps({"u": username, "p": password}).encode())


def decode_login_answer(body: bytes) -> str:
    """The host key from a server's hostKey answer."""
    try:
        data = json.loads(inflate(body, MAX_LOGIN_INFLATED))
        key = data["key"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BadRequest("unexpected hostKey answer") from exc
    if not isinstance(key, str) or not key:
        raise BadRequest("unexpected hostKey answer")
    return key


def compress(data: bytes) -> bytes:
    return _zstd_compressor.compress(data)


def encode_answer(obj: object) -> tuple[bytes, dict[str, str]]:
    """A 2xx body as the client expects it: zstd JSON plus `anki-original-size`."""
    return encode_raw_answer(json.dumps(obj, separators=(",", ":")).encode())


def encode_raw_answer(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """A 2xx body of `raw` bytes as the client expects it: zstd plus `anki-original-size`."""
    return compress(raw), {
        ORIGINAL_SIZE: str(len(raw)),
        "Content-Type": "application/octet-stream",
    }
