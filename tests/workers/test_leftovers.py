"""Temporary upload files a killed worker left behind go before the account's next worker starts."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import string
import threading
import time
from pathlib import Path

import pytest

from gateway.workers.leftovers import stale_temporaries
from tests.ankiclient import Client
from tests.workers.conftest import secret_for
from tests.workers.test_pool import wait_until


@pytest.mark.parametrize(
    ("name", "stale"),
    [
        (".tmpiRe0Jm", True),  # measured names of the stock server (see leftovers.py)
        (".tmpiRe0Jm-wal", True),
        (".tmpYyZkek-shm", True),
        (".tmpYyZkek-journal", True),
        ("collection.anki2", False),
        ("collection.anki2-wal", False),
        ("collection.anki2-journal", False),
        ("media", False),
        ("media.db", False),
        ("media.db-wal", False),
        (".gateway-worker.lock", False),
        (".tmpiRe0J", False),  # too short
        (".tmpiRe0Jm7", False),  # too long
        (".tmpiRe0J-", False),
        (".tmpiRe0Jm-other", False),
        ("x.tmpiRe0Jm", False),
        (".TMPiRe0Jm", False),
    ],
)
def test_only_the_stock_servers_temporary_names_are_stale(name, stale):
    assert stale_temporaries([name]) == ([name] if stale else [])


def temporaries(folder: Path) -> list[str]:
    return stale_temporaries(os.listdir(folder))


async def test_upload_file_of_a_killed_worker_is_removed_before_the_next_starts(
    make_pool, collections_dir, tmp_path
):
    pool = await make_pool()
    async with pool.lease("alice") as worker:
        port = worker.port
    folder = collections_dir / "alice"
    old = next(iter(pool._slots.values())).process
    assert old is not None
    pid = old.pid
    client = Client(tmp_path / "client")
    for _ in range(4):
        client.add_note("".join(random.choices(string.ascii_letters, k=2_000_000)))
    client.login("alice", secret_for("alice"), f"http://127.0.0.1:{port}/")

    # What PR_SET_PDEATHSIG does to a worker whose gateway was SIGKILLed mid-upload.
    killed = threading.Event()

    def kill_once_the_upload_is_written() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            if temporaries(folder):
                os.kill(pid, signal.SIGTERM)
                killed.set()
            time.sleep(0.001)

    killer = threading.Thread(target=kill_once_the_upload_is_written)
    killer.start()
    with pytest.raises(Exception):  # noqa: B017 - whatever the client makes of a dead server
        await asyncio.to_thread(client.sync, media=False)
    killed.set()
    killer.join()
    client.close()
    assert temporaries(folder), "the killed worker left no temporary file"
    assert await wait_until(lambda: not old.alive, timeout=10)  # reaped

    async with pool.lease("alice"):
        pass
    assert next(iter(pool._slots.values())).process.pid != pid  # type: ignore[union-attr]
    assert temporaries(folder) == []
    assert {"media", "media.db"} <= set(os.listdir(folder))


async def test_cleanup_spares_everything_but_the_temporary_files(
    make_pool, collections_dir, tmp_path
):
    folder = collections_dir / "alice"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / ".tmpAbC123").write_bytes(b"a user's media file")
    (folder / "collection.anki2").write_bytes(b"")
    (folder / "notes.txt").write_bytes(b"kept")
    (folder / ".tmpAbC123").write_bytes(b"\0" * (5 * 1024 * 1024))
    (folder / ".tmpAbC123-wal").write_bytes(b"\0" * 4096)
    (folder / ".tmpDir456").mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    (folder / ".tmpLnk789").symlink_to(outside)

    pool = await make_pool()
    async with pool.lease("alice"):
        pass
    left = set(os.listdir(folder))
    assert ".tmpAbC123" not in left and ".tmpAbC123-wal" not in left
    assert {"media", "collection.anki2", "notes.txt", ".tmpDir456", ".tmpLnk789"} <= left
    assert (folder / "media" / ".tmpAbC123").read_bytes() == b"a user's media file"
    assert outside.read_bytes() == b"not ours"
