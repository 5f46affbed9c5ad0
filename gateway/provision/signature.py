"""Optional HMAC-SHA256 request signatures for `POST /provision-user`. Pure (injected clock).

The format, shared with lambda/cognito_user_provisioner.py (which keeps its own few lines of it:
a Lambda stays standard-library only and self-contained; tests/lambda prove the two agree):

    X-Signature-Timestamp: <Unix time in whole seconds, decimal ASCII>
    X-Signature: sha256=<hex of HMAC-SHA256(secret, f"{timestamp}.".encode() + raw_body)>

`Verifier.verify()` refuses, with `SignatureError` (401): a missing or malformed header, a
timestamp more than `max_skew` seconds away from now (either way), and a signature that does
not match. A signature that verifies gives a `Nonce`: the caller spends it in the registry
(`Registry.spend_nonce`), where every gateway process on the data folder, every node and a
restart see it, and refuses the request as a replay if it was spent already. Only signatures
that verify are ever remembered (so junk cannot fill the memory), each for 2 × `max_skew`
seconds, after which its timestamp is refused anyway. The signature is an addition to the API
key, never a replacement for it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable

from gateway.nonce import Nonce, nonce

TIMESTAMP_HEADER = "X-Signature-Timestamp"
SIGNATURE_HEADER = "X-Signature"
SCHEME = "sha256="
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


class SignatureError(Exception):
    """The request's signature is missing, malformed, stale, wrong or replayed."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Signature` value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


class Verifier:
    def __init__(
        self,
        secret: str,
        *,
        max_skew: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._max_skew = max_skew
        self._clock = clock

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> Nonce:
        if timestamp is None or signature is None:
            raise SignatureError("signature headers missing")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureError("signature timestamp malformed")
        match = _SIGNATURE.fullmatch(signature)
        if match is None:
            raise SignatureError("signature malformed")
        sent_at = int(timestamp)
        if abs(self._clock() - sent_at) > self._max_skew:
            raise SignatureError("signature timestamp outside the allowed clock skew")
        # Lowercased: the same signature in other letter case must count as a replay.
        given = match.group(1).lower()
        expected = sign(self._secret, sent_at, body).removeprefix(SCHEME)
        if not hmac.compare_digest(given, expected):
            raise SignatureError("signature does not match")
        return nonce("provision", given, sent_at + self._max_skew + 1)
