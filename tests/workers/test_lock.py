"""The per-account lock file: safe folders, exclusion across processes, finding the holder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from gateway.errors import Unavailable
from gateway.workers.lock import (
    LOCK_NAME,
    NoAccountFolder,
    account_dir,
    claim,
    make_account_dir,
    read_holder,
    try_lock,
)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "", ".hidden", "..", "/etc", "x\0y", "UPPER", "a" * 80]
)
def test_unsafe_names_are_refused_and_create_nothing(tmp_path, name):
    collections = tmp_path / "collections"
    with pytest.raises(ValueError):
        account_dir(collections, name)
    with pytest.raises(ValueError):
        try_lock(collections, name)
    assert not collections.exists()
    assert list(tmp_path.iterdir()) == []


def test_account_folder_is_created_private_inside_the_collections_folder(tmp_path):
    folder = make_account_dir(tmp_path / "collections", "alice")
    assert folder == (tmp_path / "collections" / "alice").resolve()
    assert folder.is_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert account_dir(tmp_path / "collections", "alice") == folder


@pytest.mark.parametrize("look", [account_dir, try_lock])
def test_only_make_account_dir_creates_a_folder(tmp_path, look):
    """Issue 21: after a move, nothing but the paths that bring an account here (login,
    provisioning, a move's receiving end, import, restore) may put its folder back."""
    with pytest.raises(NoAccountFolder):
        look(tmp_path, "alice")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def accounts(tmp_path):
    """Folders of alice and bob under tmp_path (as a login makes them)."""
    for name in ("alice", "bob"):
        make_account_dir(tmp_path, name)


def test_symlinked_account_folder_leading_outside_is_refused(tmp_path):
    collections = tmp_path / "collections"
    collections.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (collections / "mallory").symlink_to(outside)
    with pytest.raises(ValueError):
        account_dir(collections, "mallory")
    assert list(outside.iterdir()) == []


def test_lock_excludes_a_second_holder_until_released(tmp_path, accounts):
    first = try_lock(tmp_path, "alice")
    assert first is not None
    assert try_lock(tmp_path, "alice") is None
    other = try_lock(tmp_path, "bob")  # accounts are independent
    assert other is not None
    first.release()
    first.release()  # idempotent
    again = try_lock(tmp_path, "alice")
    assert again is not None
    again.release()
    other.release()


def test_published_port_is_readable_and_emptied_on_release(tmp_path, accounts):
    lock = try_lock(tmp_path, "alice")
    assert lock is not None
    assert read_holder(lock.path) is None  # nothing published before the worker is ready
    lock.publish(4321)
    assert read_holder(lock.path).port == 4321
    assert read_holder(lock.path).pid == os.getpid()
    lock.release()
    assert read_holder(lock.path) is None


def test_stale_port_left_by_a_dead_holder_is_cleared_on_acquire(tmp_path, accounts):
    path = account_dir(tmp_path, "alice") / LOCK_NAME
    path.write_text(json.dumps({"pid": 999999, "port": 1}))
    lock = try_lock(tmp_path, "alice")
    assert lock is not None
    assert read_holder(path) is None
    lock.release()


@pytest.mark.parametrize("content", [b"", b"{", b"null", b'{"pid": 1}', b'{"pid":1,"port":"x"}'])
def test_unreadable_holder_content_is_none(tmp_path, accounts, content):
    path = tmp_path / LOCK_NAME
    path.write_bytes(content)
    assert read_holder(path) is None


def test_lock_held_by_another_process_is_dropped_when_that_process_is_killed(tmp_path, accounts):
    path = account_dir(tmp_path, "alice") / LOCK_NAME
    holder = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed script
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        assert try_lock(tmp_path, "alice") is None
        os.kill(holder.pid, signal.SIGKILL)  # a crashed gateway must not block the account
        holder.wait(5)
        lock = try_lock(tmp_path, "alice")
        assert lock is not None
        lock.release()
    finally:
        holder.kill()
        holder.wait()


async def serve_health(status: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_claim_gets_the_lock_when_nobody_holds_it(tmp_path, accounts):
    got = await claim(tmp_path, "alice", wait=1)
    assert got.lock is not None and got.port is None
    got.lock.release()


async def test_claim_uses_the_holders_worker_once_it_answers_health(tmp_path, accounts):
    server = await serve_health(200)
    port = server.sockets[0].getsockname()[1]
    held = try_lock(tmp_path, "alice")
    assert held is not None

    async def publish_later() -> None:
        await asyncio.sleep(0.2)  # the holder's worker is still starting
        held.publish(port)

    try:
        publisher = asyncio.create_task(publish_later())
        got = await claim(tmp_path, "alice", wait=3)
        await publisher
        assert (got.lock, got.port) == (None, port)
    finally:
        held.release()
        server.close()


@pytest.mark.parametrize("published", ["unhealthy", "closed port", "nothing"])
async def test_claim_is_unavailable_when_the_holders_worker_is_unreachable(
    tmp_path, accounts, published
):
    server = await serve_health(500)
    held = try_lock(tmp_path, "alice")
    assert held is not None
    if published == "unhealthy":
        held.publish(server.sockets[0].getsockname()[1])
    elif published == "closed port":
        held.publish(9)  # discard port: nothing listens on loopback
    began = time.monotonic()
    try:
        with pytest.raises(Unavailable) as info:
            await claim(tmp_path, "alice", wait=0.3)
        assert 0.3 <= time.monotonic() - began < 2
        assert info.value.status == 503
    finally:
        held.release()
        server.close()


async def test_claim_takes_over_once_the_holder_releases(tmp_path, accounts):
    held = try_lock(tmp_path, "alice")
    assert held is not None
    asyncio.get_running_loop().call_later(0.2, held.release)
    got = await claim(tmp_path, "alice", wait=3)
    assert got.lock is not None
    got.lock.release()


async def test_a_holder_on_another_machine_is_never_probed(tmp_path, accounts):
    """Shared storage across nodes: the port a holder on another machine published means
    nothing here, even when something healthy listens on it on this machine."""
    server = await serve_health(200)
    port = server.sockets[0].getsockname()[1]
    held = try_lock(tmp_path, "alice")
    assert held is not None
    held.publish(port)
    path = held.path
    published = json.loads(path.read_text())
    assert published["host"] == socket.gethostname()
    os.pwrite(held._fd, json.dumps({**published, "host": "another-node"}).encode(), 0)  # noqa: SLF001
    try:
        assert read_holder(path).host == "another-node"
        with pytest.raises(Unavailable):
            await claim(tmp_path, "alice", wait=0.3)
    finally:
        held.release()
        server.close()


async def test_a_worker_start_never_creates_the_account_folder(tmp_path):
    """A request routed to this node just before a cluster move took the account away passed
    its owner re-check; its worker start must not put an empty folder back (a login made the
    folder, and only a login, provisioning, a move's receiving end, import or restore do)."""
    (tmp_path / "collections").mkdir()
    with pytest.raises(NoAccountFolder) as info:
        await claim(tmp_path / "collections", "alice", wait=1)
    assert info.value.status == 503 and info.value.retry_after
    assert list((tmp_path / "collections").iterdir()) == []
