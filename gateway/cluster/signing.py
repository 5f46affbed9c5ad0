"""Node-to-node request signatures. Pure.

A forwarded request carries three headers:

    X-Gateway-Node            the sending node's id
    X-Gateway-Node-Time       Unix seconds (integer) when it was signed
    X-Gateway-Node-Signature  hex HMAC-SHA256 over method, path, time, node and the identity

The key is derived from the gateway secret every node shares (never the secret itself, and
never a worker password: `node_key`). The identity is SHA-256 of the request's host key (or the
account's `sub` for an internal login), so a signature cannot be reused for another account,
path or method; the time bounds a replay to `max_skew` seconds either side, and a replayed
request can do nothing its host key could not do through the public route anyway (the body is
not signed: it streams, and the key already allows any body). The comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

NODE = "X-Gateway-Node"
TIME = "X-Gateway-Node-Time"
SIGNATURE = "X-Gateway-Node-Signature"
HEADERS = (NODE, TIME, SIGNATURE)
#: On an answer: the receiving node refused the request as a node-to-node request (never passed
#: on to a client as it is: the sender turns it into a 503).
REFUSED = "X-Gateway-Node-Refused"


def node_key(secret: bytes) -> bytes:
    """The signing key, 32 bytes, from the shared gateway secret."""
    return hmac.new(secret, b"anki-gateway node-to-node v1", hashlib.sha256).digest()


def identity_of(value: str) -> str:
    """What a signature binds: SHA-256 hex of a host key or a sub."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _mac(key: bytes, method: str, path: str, timestamp: str, node: str, identity: str) -> str:
    message = "\n".join((method.upper(), path, timestamp, node, identity)).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(
    key: bytes, method: str, path: str, node: str, identity: str, now: float
) -> dict[str, str]:
    """The three headers for a request from `node`."""
    timestamp = str(int(now))
    return {
        NODE: node,
        TIME: timestamp,
        SIGNATURE: _mac(key, method, path, timestamp, node, identity),
    }


def problem(
    key: bytes,
    method: str,
    path: str,
    identity: str,
    headers: dict[str, str | None],
    now: float,
    max_skew: float,
) -> str | None:
    """None when the headers sign this request; else a short reason (safe to log)."""
    node, timestamp, signature = (headers.get(h) for h in HEADERS)
    if not node or not timestamp or not signature:
        return "not signed"
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return "malformed time"
    if abs(now - int(timestamp)) > max_skew:
        return "time outside the replay window"
    expected = _mac(key, method, path, timestamp, node, identity)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "bad signature"
    return None
