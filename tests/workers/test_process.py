"""One stock sync server process: start, readiness, environment, output, stop, orphans."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from gateway import logs
from gateway.errors import WorkerFailed, WorkerTimeout
from gateway.workers import process
from gateway.workers.containment import MIB, Limits
from gateway.workers.containment.rlimits import RlimitBox
from gateway.workers.process import WorkerKilledStarting, probe_health, start_worker, worker_env
from tests.conftest import live_worker_pids
from tests.workers.conftest import (
    DEAF_TO_SIGINT,
    STOCK,
    environ_of,
    gone,
    host_key,
    login,
    secret_for,
)

REPO = Path(__file__).resolve().parents[2]


async def start(collections_dir: Path, command=STOCK, account: str = "alice", **kwargs):
    return await start_worker(
        command=command,
        account=account,
        secret=secret_for(account),
        collections_dir=collections_dir,
        **{"start_timeout": 10, **kwargs},
    )


def test_worker_env_is_built_from_scratch(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    monkeypatch.setenv("SYNC_IP_HEADER", "X-Real-IP")
    monkeypatch.setenv("GATEWAY_SECRET", "must-not-leak-either")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("HOME", "/home/gateway")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("LC_ALL", raising=False)
    env = worker_env(
        account="bob", secret="pw", collections_dir=tmp_path, port=1234, max_payload_megs=7
    )
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/gateway",
        "LANG": "C.UTF-8",
        "RUST_LOG": "anki=info,anki::sync::http_server::logging=warn",
        "SYNC_USER1": "bob:pw",
        "SYNC_BASE": str(tmp_path),
        "SYNC_HOST": "127.0.0.1",
        "SYNC_PORT": "1234",
        "MAX_SYNC_PAYLOAD_MEGS": "7",
    }


async def test_stock_worker_is_ready_accepts_its_account_and_stops_on_sigint(collections_dir):
    began = time.monotonic()
    worker = await start(collections_dir)
    took = time.monotonic() - began
    try:
        assert worker.alive
        assert took < 5
        assert await probe_health(worker.port)
        status, key = await login(worker.port, "alice", secret_for("alice"))
        assert (status, key) == (200, host_key("alice", secret_for("alice")))
        assert (await login(worker.port, "alice", "wrong"))[0] == 403
        assert (collections_dir / "alice").is_dir()
    finally:
        await worker.stop()
    assert not worker.alive
    assert gone(worker.pid)
    assert not await probe_health(worker.port)


async def test_a_stopping_workers_shutdown_noise_is_debug_not_info(caplog, collections_dir):
    caplog.set_level(logging.DEBUG, logger="gateway.worker")
    worker = await start(collections_dir)
    await worker.stop()
    after_stop = [
        r for r in caplog.records if r.name == "gateway.worker" and "Exception" in r.getMessage()
    ]
    # The stock server answers SIGINT with a traceback; it must not reach INFO.
    assert after_stop and {r.levelno for r in after_stop} == {logging.DEBUG}


async def test_worker_environment_leaks_nothing_from_the_gateway(monkeypatch, collections_dir):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-do-not-leak")
    # Inherited, this one would make the stock server answer 500 to every request.
    monkeypatch.setenv("SYNC_IP_HEADER", "X-Forwarded-For")
    worker = await start(collections_dir)
    try:
        env = environ_of(worker.pid)
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert "AWS_ACCESS_KEY_ID" not in env
        assert "SYNC_IP_HEADER" not in env
        assert env["SYNC_USER1"] == f"alice:{secret_for('alice')}"
        assert env["SYNC_HOST"] == "127.0.0.1"
        assert (await login(worker.port, "alice", secret_for("alice")))[0] == 200
    finally:
        await worker.stop()


async def test_worker_output_is_logged_per_line_with_the_account(caplog, collections_dir):
    caplog.set_level(logging.INFO, logger="gateway.worker")
    worker = await start(collections_dir)
    await worker.stop()
    lines = [r for r in caplog.records if r.name == "gateway.worker"]
    assert any("listening" in r.getMessage() for r in lines)
    assert all(getattr(r, "account", None) == "alice" for r in lines)
    assert not any("\x1b[" in r.getMessage() for r in lines)  # colour codes stripped


async def test_worker_logs_refusals_with_their_reason_but_no_line_per_request(
    caplog, collections_dir
):
    caplog.set_level(logging.INFO, logger="gateway.worker")
    worker = await start(collections_dir)
    try:
        assert (await login(worker.port, "alice", secret_for("alice")))[0] == 200
        assert (await login(worker.port, "alice", "wrong"))[0] == 403
        await asyncio.sleep(0.3)  # the output pipe is read by its own task
    finally:
        await worker.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.worker"]
    assert any("listening" in line for line in lines), lines
    assert any("invalid user/pass" in line and "403" in line for line in lines), lines
    # The gateway's access line has these requests; the worker's own would repeat them.
    assert not any("finished" in line for line in lines), lines


class RequestIds(logging.Handler):
    """Which request id each worker line was logged under (the formatters read it then)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), logs.request_id.get()))


async def test_worker_output_carries_no_request_id_of_the_request_that_started_it(
    caplog, collections_dir
):
    caplog.set_level(logging.INFO, logger="gateway.worker")
    handler = RequestIds()
    logger = logging.getLogger("gateway.worker")
    logger.addHandler(handler)
    try:
        token = logs.request_id.set("starter")  # as the middleware does for a request
        worker = await start(collections_dir)
        logs.request_id.reset(token)
        await login(worker.port, "alice", "wrong")  # a later line of its output (a refusal)
        await asyncio.sleep(0.2)
        await worker.stop()
    finally:
        logger.removeHandler(handler)
    assert any("invalid user/pass" in line for line, _ in handler.seen)
    assert {rid for _, rid in handler.seen} == {""}


async def test_command_that_exits_at_once_is_worker_failed_with_its_redacted_output(
    caplog, collections_dir
):
    caplog.set_level(logging.INFO, logger="gateway.worker")
    command = ("sh", "-c", "echo 'starting up'; echo 'password=hunter2' >&2; exit 3")
    began = time.monotonic()
    with pytest.raises(WorkerFailed) as info:
        await start(collections_dir, command)
    assert time.monotonic() - began < 3
    assert info.value.status == 502
    assert "exited with 3" in info.value.detail
    assert "starting up" in info.value.detail
    assert "hunter2" not in info.value.detail
    assert "hunter2" not in caplog.text
    assert "password=[redacted]" in caplog.text


async def test_missing_command_is_worker_failed(collections_dir):
    with pytest.raises(WorkerFailed):
        await start(collections_dir, ("/nonexistent/anki-sync-server",))


async def test_command_never_ready_is_worker_timeout_and_killed(collections_dir):
    began = time.monotonic()
    with pytest.raises(WorkerTimeout) as info:
        await start(collections_dir, ("sleep", "60"), start_timeout=0.4)
    assert 0.4 <= time.monotonic() - began < 2
    assert info.value.status == 504
    assert live_worker_pids(collections_dir) == []


async def test_cancelled_start_leaves_no_process(collections_dir):
    task = asyncio.create_task(start(collections_dir, ("sleep", "60")))
    for _ in range(100):
        if live_worker_pids(collections_dir):
            break
        await asyncio.sleep(0.01)
    assert live_worker_pids(collections_dir)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_worker_pids(collections_dir) == []


async def test_port_taken_between_choice_and_bind_is_retried_on_another(
    monkeypatch, collections_dir
):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = process.free_port
    ports = iter([taken])
    monkeypatch.setattr(process, "free_port", lambda: next(ports, None) or real())
    try:
        worker = await start(collections_dir)
    finally:
        squatter.close()
    try:
        assert worker.port != taken
        assert (await login(worker.port, "alice", secret_for("alice")))[0] == 200
    finally:
        await worker.stop()


@pytest.mark.timeout(15)
async def test_stop_escalates_to_sigkill_when_sigint_is_ignored(collections_dir):
    worker = await start(collections_dir, DEAF_TO_SIGINT)
    began = time.monotonic()
    await worker.stop(grace=0.3)
    assert 0.3 <= time.monotonic() - began < 2
    assert worker.returncode == -signal.SIGKILL
    assert gone(worker.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_worker_dies_with_a_sigkilled_gateway(collections_dir):
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from gateway.workers.process import start_worker\n"
        "async def main():\n"
        "    w = await start_worker(command=sys.argv[2:], account='orphan', secret='s',\n"
        "                           collections_dir=Path(sys.argv[1]), start_timeout=10)\n"
        "    print(w.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(collections_dir),
        *STOCK,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    worker_pid = 0
    try:
        assert gateway.stdout is not None
        worker_pid = int(await asyncio.wait_for(gateway.stdout.readline(), 20))
        assert live_worker_pids(collections_dir) == [worker_pid]
        gateway.kill()
        await gateway.wait()
        for _ in range(300):
            if gone(worker_pid):
                break
            await asyncio.sleep(0.01)
        assert gone(worker_pid)
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()
        for pid in live_worker_pids(collections_dir):
            os.kill(pid, signal.SIGKILL)


async def test_a_worker_killed_before_it_is_ready_is_retryable_and_says_how(collections_dir):
    # SIGKILL before /health answered: the host's OOM killer or the worker's memory limit (a
    # start that may well work next time), not a fault every start meets. Before: 502 with no
    # Retry-After, and neither logged nor counted as a death.
    with pytest.raises(WorkerKilledStarting) as info:
        await start(collections_dir, ("sh", "-c", "echo starting; kill -9 $$"))
    assert info.value.status == 503 and info.value.retry_after is not None
    assert info.value.death.reason == "memory"
    assert "SIGKILL" in info.value.detail


@pytest.mark.parametrize("command", [("sh", "-c", "exit 1"), ("sh", "-c", "kill -SEGV $$")])
async def test_a_worker_that_fails_to_start_otherwise_is_still_a_bad_gateway(
    collections_dir, command
):
    with pytest.raises(WorkerFailed) as info:
        await start(collections_dir, command)
    assert info.value.status == 502


class _WatchedBox(RlimitBox):
    """The real rlimit box, telling whether the gateway removed it (a cgroup box is a
    directory that a start left behind stays in until the next gateway start-up)."""

    def __init__(self) -> None:
        super().__init__(Limits(memory_bytes=1024 * MIB, pids=64, cpu_weight=100, nice=0))
        self.removed = False

    def remove(self) -> None:
        self.removed = True


@pytest.mark.parametrize(
    ("command", "error", "boxes"),
    [
        (("sh", "-c", "exit 1"), WorkerFailed, 1),
        (("sh", "-c", "kill -SEGV $$"), WorkerFailed, 1),
        (("sh", "-c", "kill -9 $$"), WorkerKilledStarting, 1),
        # Every attempt of the port-taken retry has a box of its own.
        (
            ("sh", "-c", "echo 'Address already in use'; exit 1"),
            WorkerFailed,
            process.PORT_ATTEMPTS,
        ),
    ],
)
async def test_a_start_that_fails_removes_every_box_it_made(collections_dir, command, error, boxes):
    made: list[_WatchedBox] = []

    def box() -> _WatchedBox:
        made.append(_WatchedBox())
        return made[-1]

    with pytest.raises(error):
        await start(collections_dir, command, boxes=box)
    assert len(made) == boxes
    assert all(each.removed for each in made)
