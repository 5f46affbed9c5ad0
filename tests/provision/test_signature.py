"""gateway/provision/signature.py: format, clock skew, replays, the bounded memory."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.provision.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCacheFull,
    SignatureError,
    Verifier,
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


def verifier(clock: Clock, **kwargs: int) -> Verifier:
    return Verifier(SECRET, max_skew=300, clock=clock, **kwargs)


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


def test_a_replayed_signature_is_refused() -> None:
    check = verifier(Clock())
    check.verify(str(NOW), GOOD, BODY)
    with pytest.raises(SignatureError, match="replay"):
        check.verify(str(NOW), GOOD, BODY)


def test_a_replay_in_upper_case_hex_is_still_a_replay() -> None:
    check = verifier(Clock())
    check.verify(str(NOW), GOOD, BODY)
    with pytest.raises(SignatureError, match="replay"):
        check.verify(str(NOW), "sha256=" + GOOD[7:].upper(), BODY)


def test_a_refused_signature_is_not_remembered() -> None:
    check = verifier(Clock())
    with pytest.raises(SignatureError):
        check.verify(str(NOW), GOOD, BODY + b"x")
    check.verify(str(NOW), GOOD, BODY)


def test_the_same_body_signed_at_another_second_is_not_a_replay() -> None:
    check = verifier(Clock())
    check.verify(str(NOW), GOOD, BODY)
    check.verify(str(NOW + 1), sign(SECRET, NOW + 1, BODY), BODY)


def test_memory_is_bounded_and_refuses_rather_than_forgets_a_live_signature() -> None:
    clock = Clock()
    check = verifier(clock, cache_size=2)
    for ts in (NOW, NOW + 1):
        check.verify(str(ts), sign(SECRET, ts, BODY), BODY)
    with pytest.raises(ReplayCacheFull):
        check.verify(str(NOW + 2), sign(SECRET, NOW + 2, BODY), BODY)
    # The first signature is still remembered: refusing kept it from being evicted.
    with pytest.raises(SignatureError, match="replay"):
        check.verify(str(NOW), GOOD, BODY)
    # Once the window has passed, the old entries expire and there is room again.
    clock.now = NOW + 601
    check.verify(str(NOW + 601), sign(SECRET, NOW + 601, BODY), BODY)
