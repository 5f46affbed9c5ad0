"""A worker over its memory limit dies alone: the real `anki` collection, the real stock sync
server started by the gateway, moto as Cognito (issue 16, "Containment").

The input is honest: a full upload of a real collection of 40 MB (about 30 MB on the wire),
which the stock server holds inflated in memory, under a memory limit lowered to 64 MiB for
the test (the default, 1024 MiB, is measured against a 280 MB collection in
docs/security/containment.md).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import zstandard

from bench import collection
from gateway import metrics, protocol
from gateway.containment import cgroups
from tests import rawhttp
from tests.ankiclient import Client, Required
from tests.conftest import live_worker_pids
from tests.test_uploads import PASSWORD, send

LIMIT_MEGS = 64


class PeakData(threading.Thread):
    """The peak VmData (what RLIMIT_DATA bounds) and VmHWM of a process, in MiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = {"VmData": 0.0, "VmHWM": 0.0}

    def run(self) -> None:
        while True:
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in self.peak and value.strip():
                    self.peak[key] = max(self.peak[key], int(value.split()[0]) / 1024)
            time.sleep(0.01)


@pytest.fixture(scope="module")
def honest_upload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 40 MB collection as a full upload sends it: the file, zstd-compressed."""
    folder = tmp_path_factory.mktemp("collection")
    path = collection.make(folder, megabytes=40)
    return zstandard.ZstdCompressor(level=1).compress(path.read_bytes())


def killed_count() -> float:
    return metrics.REGISTRY.get_sample_value("gateway_worker_memory_kills_total") or 0.0


def over_the_limit_dies_alone(cognito, tmp_path, start_gateway, caplog, body, mode):
    for user in ("bob", "eve"):
        cognito.add_user(user, PASSWORD, f"{user}@example.com")
    config = cognito.config(
        tmp_path / "data",
        workers={
            "containment": mode,
            "max_memory_megs": LIMIT_MEGS,
            "max_payload_megs": 50,
            "max_inflated_megs": 200,
        },
    )
    caplog.set_level(logging.INFO)
    gw = start_gateway(config)
    (started,) = [r for r in caplog.records if r.getMessage() == "worker containment"]
    assert (started.mode, started.memory_megs) == (mode, LIMIT_MEGS)
    in_force = {"mode": mode}
    assert metrics.REGISTRY.get_sample_value("gateway_worker_containment", in_force) == 1
    bob = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    eve = gw.call(rawhttp.login(gw.port, "eve", PASSWORD))
    eve_pid, bob_pid = (pid_of(config.collections_dir, name) for name in ("eve", "bob"))
    before = killed_count()
    sampler = PeakData(bob_pid)
    sampler.start()

    status, answer, headers = gw.call(send(gw.url, bob, body, with_headers=True))

    sampler.join(5)
    assert status == 503, (status, answer)
    assert int(headers["Retry-After"]) > 0
    assert answer == b"sync backend restarted, try again later"
    assert sampler.peak["VmData"] <= LIMIT_MEGS + 1, sampler.peak
    assert killed_count() == before + 1
    kills = [r for r in caplog.records if r.getMessage() == "worker killed at its memory limit"]
    assert len(kills) == 1 and kills[0].levelname == "WARNING"
    assert kills[0].limit_megs == LIMIT_MEGS and kills[0].mode == mode
    # Alone: the other account's worker is the same process and serves on.
    assert eve_pid in live_worker_pids(config.collections_dir)
    assert meta(gw, eve) == 200
    # The account's next sync works, on a fresh worker: a real client's, with a small
    # collection (the big one never reached the server).
    device = Client(tmp_path / "device")
    device.login("bob", PASSWORD, gw.url)
    device.add_note("after the kill")
    assert device.sync(media=False) == Required.FULL_UPLOAD
    assert pid_of(config.collections_dir, "bob") not in (bob_pid, None)
    other = Client(tmp_path / "other")
    other.login("bob", PASSWORD, gw.url)
    other.sync(media=False)
    assert other.note_fronts() == {"after the kill"}
    for each in (device, other):
        each.close()
    return sampler.peak


def meta(gw, key: str) -> int:
    status, _ = gw.call(send(gw.url, key, protocol.compress(b'{"v":11,"cv":"t"}'), "sync/meta"))
    return status


def pid_of(collections_dir: Path, account: str) -> int | None:
    """The pid of `account`'s worker (its SYNC_USER1 names the account), or None."""
    for pid in live_worker_pids(collections_dir):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if any(item.startswith(f"SYNC_USER1={account}:".encode()) for item in environ):
            return pid
    return None


def test_rlimit_mode_worker_over_its_memory_limit_dies_alone_with_a_retryable_answer(
    cognito, tmp_path, start_gateway, caplog, honest_upload
):
    peak = over_the_limit_dies_alone(
        cognito, tmp_path, start_gateway, caplog, honest_upload, "rlimit"
    )
    print(f"worker peak before it died: {peak}")


def test_cgroup_mode_worker_over_its_memory_limit_dies_alone_with_a_retryable_answer(
    cognito, tmp_path, start_gateway, caplog, honest_upload
):
    found = cgroups.find()
    if not isinstance(found, Path):
        pytest.skip(f"no writable cgroup v2 subtree here: {found}")
    over_the_limit_dies_alone(cognito, tmp_path, start_gateway, caplog, honest_upload, "cgroup")
