"""Usage totals for the metrics: one walk over every account folder, repeated on a timer only."""

from __future__ import annotations

import asyncio
import os
import time

from gateway.ops.usagetotals import UsageTotals, total


def account(root, name: str, collection: int, media: list[int]) -> None:
    folder = root / name
    (folder / "media").mkdir(parents=True)
    (folder / "collection.anki2").write_bytes(b"c" * collection)
    for i, size in enumerate(media):
        (folder / "media" / f"m{i}").write_bytes(b"m" * size)


def test_total_adds_up_every_account_folder(tmp_path):
    account(tmp_path, "alice", 1000, [10, 20])
    account(tmp_path, "bob", 500, [5])
    (tmp_path / "stray-file").write_bytes(b"x" * 99)  # not an account folder
    os.symlink(tmp_path / "alice", tmp_path / "alias")  # never counted twice
    got = total(tmp_path, clock=lambda: 42.0)
    assert (got.accounts, got.collection_bytes, got.media_files, got.media_bytes) == (
        2,
        1500,
        3,
        35,
    )
    assert got.computed_at == 42.0


def test_accounts_over_their_limits_are_counted_and_their_shares_kept_without_names(tmp_path):
    from gateway.quota.limits import Limits

    account(tmp_path, "alice", 1000, [10, 20])  # collection over 800
    account(tmp_path, "bob", 500, [5])  # media over its own 4
    account(tmp_path, "carol", 100, [])  # unlimited
    own = {"bob": Limits(collection=1000, media=4), "carol": Limits()}
    got = total(tmp_path, limits=lambda name: own.get(name, Limits(collection=800, media=100)))
    assert got.over_quota == 2
    assert sorted(got.collection_shares) == [0.0, 0.5, 1.25]
    assert sorted(got.media_shares) == [0.0, 0.3, 1.25]


def test_a_missing_collections_folder_is_all_zeros(tmp_path):
    assert total(tmp_path / "nothing").media_files == 0


async def test_the_walk_repeats_on_its_timer_and_reading_never_walks(tmp_path):
    account(tmp_path, "alice", 100, [1])
    keeper = UsageTotals(tmp_path, every=0.2)
    task = asyncio.create_task(keeper.run())
    try:
        deadline = time.monotonic() + 10
        while keeper.latest is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        first = keeper.latest
        account(tmp_path, "bob", 100, [1, 1])
        assert keeper.latest is first  # reading is free: nothing walks until the timer
        while keeper.latest.media_files != 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert keeper.latest.computed_at >= first.computed_at
    finally:
        task.cancel()
