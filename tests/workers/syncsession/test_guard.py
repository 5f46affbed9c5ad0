"""The proxy's side of the rule (syncsession/guard.py), on a real account folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import SyncConflict
from gateway.workers.syncsession import SessionGuard


@pytest.mark.parametrize("ending", ["sync/abort", "sync/finish"])
async def test_a_sync_that_ends_frees_the_account_before_its_answer_is_read(
    tmp_path: Path, ending: str
):
    # Two gateway processes: the holder's abort/finish is still being answered by one (its
    # answer streams to the client, who may already send the next request) when another
    # device's start reaches the other. Before: the lease went only once the answer was read,
    # and the start got 409 ("only one copy of Anki can sync") although the sync had ended.
    (tmp_path / "quinn").mkdir()
    here, there = SessionGuard(tmp_path, idle=60.0), SessionGuard(tmp_path, idle=60.0)
    async with here.turn("quinn", "sync/start", "s1") as turn:
        turn.status = 200
    async with here.turn("quinn", ending, "s1") as turn:
        assert turn.answer is None  # goes to the worker
        async with there.turn("quinn", "sync/start", "s2") as other:
            assert other.answer is None
            other.status = 200
        turn.status = 200
    # s2 now holds the account: s1 may not start again meanwhile.
    with pytest.raises(SyncConflict):
        async with here.turn("quinn", "sync/start", "s1"):
            pass
