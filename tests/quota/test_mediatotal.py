"""The media total shared by gateway processes (quota/mediatotal.py), on real folders: each
`MediaTotal` below opens the file on its own, as another process would."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from gateway.quota.limits import OverQuota
from gateway.quota.mediatotal import (
    FILE_NAME,
    MAX_BYTES,
    PENDING_SECONDS,
    WALK_SECONDS,
    MediaTotal,
)

T0 = 1_000_000.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "held.jpg").write_bytes(b"h" * 1000)
    return tmp_path


def adds(size: int):
    return lambda current: size


def test_two_processes_see_each_others_upload_in_flight_and_applied(folder):
    now = [T0]
    one, two = (MediaTotal(folder, clock=lambda: now[0]) for _ in range(2))
    one.refresh()
    seen = []
    one.reserve("a", lambda current: seen.append(current) or 500)
    two.reserve("b", lambda current: seen.append(current) or 300)
    assert seen == [1000, 1500]
    one.settle("a", applied=True)
    two.settle("b", applied=False)
    assert two.current() == 1500
    assert json.loads((folder / FILE_NAME).read_bytes())["pending"] == {}


def test_a_refusal_reserves_nothing(folder):
    total = MediaTotal(folder)

    def refuse(current: int) -> int:
        raise OverQuota("no")

    with pytest.raises(OverQuota):
        total.reserve("a", refuse)
    assert total.current() == 1000


def test_reserving_a_key_again_replaces_its_reservation(folder):
    total = MediaTotal(folder)
    total.reserve("a", adds(400))
    total.reserve("a", adds(400))
    assert total.current() == 1400


def test_an_upload_that_frees_room_frees_it_once_the_worker_took_it(folder):
    total = MediaTotal(folder)
    total.reserve("delete", adds(-1000))
    assert total.current() == 1000
    total.settle("delete", applied=True)
    assert total.current() == 0


def test_a_reservation_whose_process_died_lapses(folder):
    now = [T0]
    total = MediaTotal(folder, clock=lambda: now[0])
    total.reserve("died", adds(500))
    now[0] += PENDING_SECONDS - 1
    assert total.current() == 1500
    now[0] += 2
    assert total.current() == 1000
    total.reserve("next", adds(1))
    assert list(json.loads((folder / FILE_NAME).read_bytes())["pending"]) == ["next"]


def test_the_folder_is_walked_again_when_the_walk_is_old_or_dated_ahead(folder):
    now = [T0]
    total = MediaTotal(folder, clock=lambda: now[0])
    total.refresh()
    total.reserve("in-flight", adds(5))
    (folder / "media" / "more.jpg").write_bytes(b"m" * 200)
    now[0] += WALK_SECONDS - 1
    total.refresh()
    assert total.current() == 1005
    now[0] += 2
    total.refresh()
    assert total.current() == 1205  # walked; the upload in flight still counts
    now[0] -= 3600  # the clock was set back: the walk is "in the future"
    (folder / "media" / "more.jpg").unlink()
    total.refresh()
    assert total.current() == 1005


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        b'{"held": "x"}',
        b"[]",
        b'{"held": 1, "walked": 1, "pending": {"a": 1}}',
        b'{"held": 1e400, "walked": 1, "pending": {}}',  # int(inf): OverflowError
        b'{"held": 1, "walked": 1, "pending": {"a": [1e400, 1]}}',
    ],
)
def test_an_unreadable_file_counts_as_none(folder, content):
    (folder / FILE_NAME).write_bytes(content)
    assert MediaTotal(folder).current() == 1000


def test_an_oversized_file_is_walked_again_and_cut_to_size(folder):
    (folder / FILE_NAME).write_bytes(b" " * (MAX_BYTES + 10))
    total = MediaTotal(folder)
    total.reserve("a", adds(1))
    assert total.current() == 1001
    assert os.path.getsize(folder / FILE_NAME) < 200


def test_the_file_is_rewritten_in_place_never_emptied_first(folder):
    total = MediaTotal(folder)
    for key in "abcdef":
        total.reserve(key, adds(10))
    size = os.path.getsize(folder / FILE_NAME)
    for key in "abcdef":
        total.settle(key, applied=True)
    assert os.path.getsize(folder / FILE_NAME) == size  # padded, not truncated
    assert total.current() == 1060


def test_an_account_folder_gone_meanwhile_keeps_nothing(tmp_path):
    total = MediaTotal(tmp_path / "moved-away")
    total.refresh()
    total.reserve("a", lambda current: current + 7)
    assert not (tmp_path / "moved-away").exists()


def test_a_decision_waits_for_another_holder_of_the_lock(folder):
    MediaTotal(folder).refresh()
    fd = os.open(folder / FILE_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    decided = threading.Event()
    worker = threading.Thread(
        target=lambda: MediaTotal(folder).reserve("a", lambda c: decided.set() or 1)
    )
    worker.start()
    time.sleep(0.2)
    assert not decided.is_set()
    os.close(fd)
    worker.join(5)
    assert decided.is_set()


def test_a_restore_puts_the_total_aside_with_the_media_it_counted(folder):
    from gateway.backup.swap import swap_all

    MediaTotal(folder).reserve("applied", adds(5000))
    MediaTotal(folder).settle("applied", applied=True)
    (folder / "collection.anki2").write_bytes(b"old")
    staged = folder / "staged"
    (staged / "media").mkdir(parents=True)
    (staged / "media" / "restored.jpg").write_bytes(b"r" * 300)
    (staged / "collection.anki2").write_bytes(b"restored")
    swap_all([(folder, staged)])
    assert not (folder / FILE_NAME).exists()
    assert MediaTotal(folder).current() == 300


class SlowWalk(MediaTotal):
    """A walk of a large media folder (hundreds of thousands of small files, which a media
    quota does not bound): it takes the folder's real size, then waits until `go` is set."""

    def __init__(self, folder: Path, **kwargs) -> None:
        super().__init__(folder, **kwargs)
        self.walking, self.go = threading.Event(), threading.Event()

    def _walk(self) -> int:
        size = super()._walk()
        self.walking.set()
        assert self.go.wait(10)
        return size


def test_a_walk_holds_no_lock_and_an_upload_applied_meanwhile_stays_counted(folder):
    """The guard decides and settles uploads on the gateway's event loop: a walk that held the
    lock stopped every other request of the process (and of others on the data folder) for the
    walk's length. And what an upload adds while a walk runs is counted after it."""
    now = [T0]
    MediaTotal(folder, clock=lambda: now[0]).refresh()
    now[0] += WALK_SECONDS + 1  # stale: the next refresh walks
    walker = SlowWalk(folder, clock=lambda: now[0])
    walk = threading.Thread(target=walker.refresh)
    walk.start()
    assert walker.walking.wait(10)
    other = MediaTotal(folder, clock=lambda: now[0])

    def upload() -> None:
        other.reserve("u", adds(5000))
        (folder / "media" / "new.jpg").write_bytes(b"n" * 5000)
        other.settle("u", applied=True)

    during = threading.Thread(target=upload)
    during.start()
    during.join(3)
    settled_during_walk = not during.is_alive()
    walker.go.set()
    walk.join(10)
    during.join(10)
    assert settled_during_walk
    assert other.current() == 6000  # the walk missed new.jpg; its upload still counts
    now[0] += WALK_SECONDS + 1
    other.refresh()
    assert other.current() == 6000
