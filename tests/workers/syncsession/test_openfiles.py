"""Kept descriptors of the lease's files (syncsession/openfiles.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.workers.syncsession.openfiles import OpenFiles


def test_a_kept_file_is_reused_until_its_path_names_another_file(tmp_path: Path):
    files, path = OpenFiles(), str(tmp_path / "f")
    first = files.take(path)
    files.give(first)
    again = files.take(path)
    assert again is first  # no open, no close
    files.give(again)
    os.rename(path, tmp_path / "moved")  # its folder moved away and back, say
    open_before = len(os.listdir("/proc/self/fd"))
    fresh = files.take(path)
    assert fresh is not first and os.path.samestat(os.fstat(fresh.fd), os.stat(path))
    assert len(os.listdir("/proc/self/fd")) == open_before  # the stale one was closed
    files.give(fresh)


def test_a_file_gone_with_its_folder_is_not_created_again(tmp_path: Path):
    files, folder = OpenFiles(), tmp_path / "acct"
    folder.mkdir()
    files.give(files.take(str(folder / "f")))
    folder.rename(tmp_path / ".moved-acct")
    with pytest.raises(FileNotFoundError):
        files.take(str(folder / "f"))
    assert not folder.exists()


def test_at_most_most_files_stay_open_and_none_in_use_is_closed(tmp_path: Path):
    files = OpenFiles(most=2)
    used = files.take(str(tmp_path / "a"))
    for name in "bcd":
        files.give(files.take(str(tmp_path / name)))
    assert len(files) == 2
    os.fstat(used.fd)  # still open: in use
    files.give(used)


def test_drop_closes_a_folders_files_once_given_back(tmp_path: Path):
    files = OpenFiles()
    (tmp_path / "acct").mkdir()
    used = files.take(str(tmp_path / "acct" / "f"))
    idle = files.take(str(tmp_path / "acct" / "g"))
    files.give(idle)
    files.drop(str(tmp_path / "acct"))
    with pytest.raises(OSError):
        os.fstat(idle.fd)
    os.fstat(used.fd)
    files.give(used)
    with pytest.raises(OSError):
        os.fstat(used.fd)
    assert len(files) == 0
