"""The one-sync-per-account rule as a table: (lease, request) -> action and the lease after."""

from __future__ import annotations

import pytest

from gateway.workers.syncsession.rules import Action, Lease, after, before, renewal_step

IDLE = 60.0
NOW = 1000.0
MINE = Lease("a", NOW + 30)
LAPSED = Lease("a", NOW - 1)


@pytest.mark.parametrize(
    ("lease", "method", "session", "action", "kept"),
    [
        # Nothing live: a start claims the account.
        (None, "sync/start", "b", Action.PASS, Lease("b", NOW + IDLE)),
        (LAPSED, "sync/start", "b", Action.PASS, Lease("b", NOW + IDLE)),
        # Another device's sync is live: refused like the stock server's 409.
        (MINE, "sync/start", "b", Action.REFUSE, MINE),
        (MINE, "sync/meta", "b", Action.REFUSE, MINE),
        (MINE, "sync/upload", "b", Action.REFUSE, MINE),
        (MINE, "sync/download", "b", Action.REFUSE, MINE),
        (MINE, "sync/applyChanges", "b", Action.REFUSE, MINE),
        (MINE, "sync/finish", "b", Action.REFUSE, MINE),
        # ... and its abort is answered here: it ends only its own sync.
        (MINE, "sync/abort", "b", Action.ANSWER_ABORT, MINE),
        # The live sync's own requests pass and renew the lease.
        (MINE, "sync/chunk", "a", Action.PASS, Lease("a", NOW + IDLE)),
        (MINE, "sync/abort", "a", Action.PASS, Lease("a", NOW + IDLE)),
        (MINE, "sync/meta", "a", Action.PASS, MINE),
        # Media sync never touches the collection sync.
        (MINE, "msync/begin", "b", Action.PASS, MINE),
        (MINE, "msync/uploadChanges", "b", Action.PASS, MINE),
        # A lapsed sync holds nothing: another device's requests pass.
        (LAPSED, "sync/meta", "b", Action.PASS, LAPSED),
        (LAPSED, "sync/meta", "a", Action.PASS, LAPSED),
        (None, "sync/meta", "b", Action.PASS, None),
        # A sync nobody holds was cut (moved, worker stopped, lapsed): "try again" (503).
        (LAPSED, "sync/applyChanges", "b", Action.RETRY, LAPSED),
        (LAPSED, "sync/chunk", "a", Action.RETRY, LAPSED),
        (None, "sync/applyChanges", "b", Action.RETRY, None),
        (None, "sync/finish", "b", Action.RETRY, None),
        (None, "sync/abort", "b", Action.ANSWER_ABORT, None),
    ],
)
def test_before_decides_each_request(lease, method, session, action, kept):
    decision = before(lease, method, session, NOW, IDLE)
    assert (decision.action, decision.lease) == (action, kept)


@pytest.mark.parametrize(
    ("method", "session", "action", "kept"),
    [
        # A request of the lease's session still in flight holds it past `expires`: the idle
        # clock counts from the end of the session's last request.
        ("sync/start", "b", Action.REFUSE, LAPSED),
        ("sync/meta", "b", Action.REFUSE, LAPSED),
        ("sync/applyChanges", "b", Action.REFUSE, LAPSED),
        ("sync/abort", "b", Action.ANSWER_ABORT, LAPSED),
        ("sync/chunk", "a", Action.PASS, Lease("a", NOW + IDLE)),
    ],
)
def test_a_request_in_flight_holds_a_lease_past_its_expiry(method, session, action, kept):
    decision = before(LAPSED, method, session, NOW, IDLE, busy=True)
    assert (decision.action, decision.lease) == (action, kept)


@pytest.mark.parametrize(
    ("method", "status", "left"),
    [
        ("sync/finish", 200, None),
        ("sync/finish", 400, None),
        ("sync/abort", 200, None),
        ("sync/abort", None, None),
        ("sync/start", 409, None),  # refused upstream: nothing to hold
        ("sync/start", None, None),  # no answer
        ("sync/start", 200, Lease("a", NOW + IDLE)),
        ("sync/applyChanges", 200, Lease("a", NOW + IDLE)),
        ("sync/applyChanges", 400, Lease("a", NOW + IDLE)),  # the client aborts next
        ("sync/meta", 200, None),  # the stock server dropped the live sync: its own too
        ("sync/upload", 200, None),
        ("sync/applyGraves", 409, None),  # the worker has no such sync: not renewed
    ],
)
def test_after_releases_or_renews_its_own_lease(method, status, left):
    assert after(MINE, method, "a", status, NOW, IDLE) == left


def test_after_leaves_another_sessions_lease_alone():
    other = Lease("b", NOW + 5)
    assert after(other, "sync/finish", "a", 200, NOW, IDLE) == other
    assert after(None, "sync/abort", "a", 200, NOW, IDLE) is None


@pytest.mark.parametrize(("idle", "step"), [(60.0, 5.0), (300.0, 5.0), (10.0, 1.0), (1.0, 0.1)])
def test_the_renewal_step_is_a_tenth_of_idle_at_most_five_seconds(idle, step):
    assert renewal_step(idle) == step


@pytest.mark.parametrize(
    ("expires", "renewed"),
    [
        (NOW + IDLE, False),  # renewed a moment ago
        (NOW + IDLE - 4.9, False),  # within the 5 s step: no write
        (NOW + IDLE - 5.0, False),
        (NOW + IDLE - 5.1, True),  # past it: renewed to now + idle
        (NOW + 1, True),
        (NOW - 1, True),  # lapsed, but its request was in flight (busy)
        (NOW + IDLE + 30, True),  # later than now + idle (another node's clock): set anew
    ],
)
def test_a_renewal_smaller_than_the_step_keeps_the_lease_as_it_is(expires, renewed):
    # Each renewal is a write of the lease file shared by the processes (store.py); the
    # requests of a sync come in quick succession, so most renewals would move it by less
    # than a second.
    lease = Lease("a", expires)
    for kept in (
        before(lease, "sync/chunk", "a", NOW, IDLE, busy=True).lease,
        after(lease, "sync/chunk", "a", 200, NOW, IDLE),
    ):
        if renewed:
            assert kept == Lease("a", NOW + IDLE)
        else:
            assert kept is lease


def test_a_long_request_still_renews_when_it_is_answered():
    # A slow phone's chunk answered 30 s after it was sent: the idle clock restarts then.
    sent = before(Lease("a", NOW + IDLE), "sync/chunk", "a", NOW, IDLE).lease
    assert after(sent, "sync/chunk", "a", 200, NOW + 30, IDLE) == Lease("a", NOW + 30 + IDLE)
