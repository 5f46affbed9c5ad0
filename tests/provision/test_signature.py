"""gateway/provision/signature.py: format, clock skew, and the nonce a verified signature gives
(replays are refused where the nonce is spent: tests/test_registry.py, tests/provision)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.provision.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    Verifier,
    nonce,
    sign,
    signed_headers,
)

SECRET = "s" * 32
BODY = b'{"username": "bob"}'
NOW = 1_700_000_000


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(clock: Clock) -> Verifier:
    return Verifier(SECRET, max_skew=300, clock=clock)


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == "sha256=" + expected


def test_signed_headers_use_whole_seconds() -> None:
    headers = signed_headers(SECRET, BODY, NOW + 0.9)
    assert headers == {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: sign(SECRET, NOW, BODY)}


def test_a_fresh_signature_verifies() -> None:
    verifier(Clock()).verify(str(NOW), sign(SECRET, NOW, BODY), BODY)


@pytest.mark.parametrize("offset", [-300, 300, 0, -1, 1])
def test_timestamps_within_the_skew_verify(offset: int) -> None:
    verifier(Clock(NOW + offset)).verify(str(NOW), sign(SECRET, NOW, BODY), BODY)


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_timestamps_outside_the_skew_are_refused(offset: int) -> None:
    with pytest.raises(SignatureError, match="skew"):
        verifier(Clock(NOW + offset)).verify(str(NOW), sign(SECRET, NOW, BODY), BODY)


GOOD = sign(SECRET, NOW, BODY)


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "problem"),
    [
        pytest.param(None, GOOD, BODY, "missing", id="no-timestamp"),
        pytest.param(str(NOW), None, BODY, "missing", id="no-signature"),
        pytest.param("", GOOD, BODY, "timestamp malformed", id="empty-timestamp"),
        pytest.param("-5", GOOD, BODY, "timestamp malformed", id="negative"),
        pytest.param("1.7e9", GOOD, BODY, "timestamp malformed", id="float"),
        pytest.param(" 1700000000", GOOD, BODY, "timestamp malformed", id="space"),
        pytest.param("1" * 13, GOOD, BODY, "timestamp malformed", id="huge"),
        pytest.param("１７００", GOOD, BODY, "timestamp malformed", id="fullwidth-digits"),
        pytest.param(str(NOW), GOOD[7:], BODY, "signature malformed", id="no-scheme"),
        pytest.param(str(NOW), "sha1=" + GOOD[7:], BODY, "malformed", id="other-scheme"),
        pytest.param(str(NOW), GOOD[:-1], BODY, "malformed", id="short"),
        pytest.param(str(NOW), GOOD + "00", BODY, "malformed", id="long"),
        pytest.param(str(NOW), GOOD, BODY + b" ", "does not match", id="body-changed"),
        pytest.param(str(NOW - 1), GOOD, BODY, "does not match", id="timestamp-changed"),
        pytest.param(
            str(NOW), sign("other" * 8, NOW, BODY), BODY, "does not match", id="other-secret"
        ),
    ],
)
def test_bad_signatures_are_refused(
    timestamp: str | None, signature: str | None, body: bytes, problem: str
) -> None:
    with pytest.raises(SignatureError, match=problem):
        verifier(Clock()).verify(timestamp, signature, body)


def test_a_verified_signature_gives_a_nonce_to_remember_past_the_window() -> None:
    spent = verifier(Clock()).verify(str(NOW), GOOD, BODY)
    assert spent.until == NOW + 301  # its timestamp is refused from then on
    assert len(spent.key) == 64 and GOOD[7:] not in spent.key


def test_the_same_signature_in_upper_case_hex_gives_the_same_nonce() -> None:
    check = verifier(Clock())
    assert check.verify(str(NOW), GOOD, BODY) == check.verify(
        str(NOW), "sha256=" + GOOD[7:].upper(), BODY
    )


def test_the_same_body_signed_at_another_second_gives_another_nonce() -> None:
    check = verifier(Clock())
    first = check.verify(str(NOW), GOOD, BODY)
    assert check.verify(str(NOW + 1), sign(SECRET, NOW + 1, BODY), BODY).key != first.key


def test_nonces_of_different_purposes_differ() -> None:
    assert nonce("provision", "ab" * 32, 1.0) != nonce("move", "ab" * 32, 1.0)
