"""Open collection syncs and what a request meets while a backup wants its account (pure)."""

from __future__ import annotations

import math

import pytest

from gateway.backup.sessions import OpenSyncs, Verdict, verdict


@pytest.mark.parametrize(
    ("wanted", "force_at", "in_open_sync", "wall", "expected"),
    [
        (False, math.inf, False, 100.0, Verdict.PASS),
        (False, 50.0, True, 100.0, Verdict.PASS),
        (True, math.inf, False, 100.0, Verdict.HOLD),  # a new sync waits for the backup
        (True, 200.0, True, 100.0, Verdict.PASS),  # the sync under way may finish
        (True, 100.0, True, 100.0, Verdict.CUT),  # ... until force_at
        (True, 50.0, False, 100.0, Verdict.HOLD),
    ],
)
def test_verdict(wanted, force_at, in_open_sync, wall, expected) -> None:
    assert verdict(wanted=wanted, force_at=force_at, in_open_sync=in_open_sync, wall=wall) is (
        expected
    )


def test_a_sync_is_open_from_an_answered_start_to_finish_or_abort() -> None:
    syncs = OpenSyncs(idle_limit=60)
    assert syncs.answered("a", "sync/meta", "s1", 200, 0) == (False, False)
    assert not syncs.is_open("a", "s1", 0)
    assert syncs.answered("a", "sync/start", "s1", 409, 0) == (False, False)  # refused: none
    assert syncs.answered("a", "sync/start", "s1", 200, 0) == (True, False)
    assert syncs.is_open("a", "s1", 1) and not syncs.is_open("a", "s2", 1)
    assert not syncs.is_open("b", "s1", 1)
    assert syncs.answered("a", "sync/applyChanges", "s2", 200, 2) == (False, False)  # not its own
    assert syncs.answered("a", "sync/finish", "s1", 200, 3) == (False, True)
    assert not syncs.is_open("a", "s1", 3)
    assert syncs.answered("a", "sync/start", "s1", 200, 4) == (True, False)
    assert syncs.answered("a", "sync/abort", "s1", None, 5) == (False, True)  # no answer: over too


def test_another_devices_start_replaces_the_open_sync() -> None:
    syncs = OpenSyncs()
    syncs.answered("a", "sync/start", "s1", 200, 0)
    assert syncs.answered("a", "sync/start", "s2", 200, 1) == (True, True)
    assert syncs.is_open("a", "s2", 1) and not syncs.is_open("a", "s1", 1)
    assert syncs.accounts() == ["a"]


def test_a_silent_sync_ends_after_the_idle_limit_and_each_step_keeps_it_alive() -> None:
    syncs = OpenSyncs(idle_limit=60)
    syncs.answered("a", "sync/start", "s1", 200, 0)
    syncs.answered("a", "sync/applyChanges", "s1", 200, 50)
    assert syncs.expired(100) == [] and syncs.is_open("a", "s1", 100)
    assert not syncs.is_open("a", "s1", 111)
    assert syncs.expired(111) == ["a"] and syncs.accounts() == []


def test_a_cut_sync_is_recognised_until_a_new_start_or_the_idle_limit() -> None:
    syncs = OpenSyncs(idle_limit=60)
    assert not syncs.cut("a", 0)
    syncs.answered("a", "sync/start", "s1", 200, 0)
    assert syncs.cut("a", 10)
    assert not syncs.is_open("a", "s1", 10)
    assert syncs.was_cut("a", "sync/applyGraves", "s1")
    assert not syncs.was_cut("a", "sync/meta", "s1")  # a new sync begins with meta: not cut
    assert not syncs.was_cut("a", "sync/applyGraves", "s2")
    syncs.expired(71)
    assert not syncs.was_cut("a", "sync/applyGraves", "s1")
    syncs.answered("a", "sync/start", "s1", 200, 80)
    syncs.cut("a", 90)
    syncs.answered("a", "sync/start", "s1", 200, 91)
    assert not syncs.was_cut("a", "sync/applyGraves", "s1")
