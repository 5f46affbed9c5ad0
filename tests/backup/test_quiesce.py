"""The flock handshake between a backup and the gateways, across open files and processes."""

from __future__ import annotations

import fcntl
import math
import os
import subprocess
import sys
from pathlib import Path

from gateway.backup import quiesce


def test_a_posted_want_is_seen_with_its_force_time_and_one_backup_at_a_time(tmp_path) -> None:
    assert quiesce.wanted(tmp_path) is None  # no file yet
    posted = quiesce.post(tmp_path, force_at=1234.5)
    assert posted is not None
    want = quiesce.wanted(tmp_path)
    assert want is not None and want.force_at == 1234.5
    assert quiesce.post(tmp_path, force_at=1.0) is None  # a second backup
    posted.release()
    posted.release()  # idempotent
    assert quiesce.wanted(tmp_path) is None
    with quiesce.post(tmp_path, force_at=2.0):
        assert quiesce.wanted(tmp_path) is not None
    assert quiesce.wanted(tmp_path) is None


def test_a_killed_backup_leaves_no_want_behind(tmp_path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from gateway.backup import quiesce;"
        f"p = quiesce.post(Path({str(tmp_path)!r}), force_at=99.0); print('posted', flush=True);"
        "time.sleep(60)"
    )
    backup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert backup.stdout is not None and backup.stdout.readline() == "posted\n"
        want = quiesce.wanted(tmp_path)
        assert want is not None and want.pid == backup.pid and want.force_at == 99.0
    finally:
        backup.kill()
        backup.wait()
    assert quiesce.wanted(tmp_path) is None


def test_activity_is_counted_and_idle_everywhere_sees_any_share(tmp_path: Path) -> None:
    activity = quiesce.Activity()
    assert quiesce.idle_everywhere(tmp_path)
    activity.enter(tmp_path)
    activity.enter(tmp_path)
    assert not quiesce.idle_everywhere(tmp_path)
    activity.leave(tmp_path)
    assert activity.count(tmp_path) == 1 and not quiesce.idle_everywhere(tmp_path)
    other = quiesce.Activity()  # another gateway process: shares do not exclude each other
    other.enter(tmp_path)
    activity.leave(tmp_path)
    assert not quiesce.idle_everywhere(tmp_path)
    other.leave(tmp_path)
    assert quiesce.idle_everywhere(tmp_path) and activity.count(tmp_path) == 0


def test_an_unwritten_want_is_a_want_without_a_force_time(tmp_path) -> None:
    fd = os.open(tmp_path / quiesce.BACKUP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked, not written yet
    try:
        want = quiesce.wanted(tmp_path)
        assert want is not None and want.force_at == math.inf
    finally:
        os.close(fd)
