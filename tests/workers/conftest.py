"""Fixtures for the worker tests: the real stock sync server, and a pool factory that always
cleans up (and fails the test if a worker process outlives its pool)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zstandard

from gateway.workers.lock import make_account_dir
from gateway.workers.pool import WorkerPool
from tests.conftest import live_worker_pids

STOCK = (sys.executable, "-c", "from anki._rsbridge import syncserver; syncserver()")

# A stand-in server that answers /health but ignores SIGINT: for the SIGKILL escalation.
DEAF_TO_SIGINT = (
    sys.executable,
    "-c",
    "import os, signal, http.server\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers()\n"
    "    def log_message(self, *args): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['SYNC_PORT'])), H).serve_forever()\n",
)


def secret_for(account: str) -> str:
    return f"secret-of-{account}-0123456789"


async def read_secret(account: str) -> str:
    """`secret_for` as the pool reads it (from the registry, a coroutine)."""
    return secret_for(account)


def host_key(account: str, password: str) -> str:
    # The stock server's key: sha1 of the whole SYNC_USER1 value (anki-sync-protocol.md).
    return hashlib.sha1(f"{account}:{password}".encode()).hexdigest()  # noqa: S324


async def login(port: int, username: str, password: str) -> tuple[int, str | None]:
    """POST sync/hostKey as a modern client does; (status, host key or None)."""
    body = zstandard.ZstdCompressor().compress(json.dumps({"u": username, "p": password}).encode())
    header = json.dumps({"v": 11, "k": "", "c": "test", "s": "x"}, separators=(",", ":"))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/sync/hostKey",
            data=body,
            headers={"anki-sync": header, "Content-Type": "application/octet-stream"},
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return resp.status, None
            data = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            return resp.status, json.loads(data)["key"]


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def gone(pid: int) -> bool:
    """True once `pid` is no process or only a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


#: The accounts the worker tests use, with their folders made as a first login makes them (a
#: worker start never creates one: workers/lock.py).
ACCOUNTS = ("a1", "a2", "a3", "alice", "bob", "busy", "f1", "f2", "idle", "new", "old", "recent")


@pytest.fixture
def collections_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "collections"
    for account in ACCOUNTS:
        make_account_dir(folder, account)
    return folder


@pytest.fixture
async def make_pool(collections_dir: Path) -> AsyncIterator[Callable[..., Awaitable[WorkerPool]]]:
    """`make_pool(**kwargs)` → a started WorkerPool on `collections_dir` (closed at teardown)."""
    pools: list[WorkerPool] = []

    async def make(**kwargs: Any) -> WorkerPool:
        options: dict[str, Any] = {
            "command": STOCK,
            "collections_dir": collections_dir,
            "secret_for": read_secret,
            "start_timeout": 10,
            "queue_timeout": 2,
        }
        options.update(kwargs)
        pool = WorkerPool(**options)
        await pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()
    leftovers = live_worker_pids(collections_dir)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], "worker processes outlived their pool"
