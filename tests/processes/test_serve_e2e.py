"""`python -m gateway serve` with server.processes: 2, as an operator runs it: a moto server
as Cognito, the real `anki` client, real stock sync servers. One gateway for the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.local import standin
from gateway.processes.supervisor import START_GRACE
from tests.ankiclient import Client
from tests.cluster.nodes import ROOT, Moto, gateway_env, start_moto, wait_http
from tests.conftest import live_worker_pids
from tests.ports import free_port


@dataclass
class Served:
    process: subprocess.Popen
    url: str
    metrics_url: str
    data_dir: Path
    log: Path
    users: list[standin.LocalUser]
    started: float = 0.0

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def lines(self) -> list[dict]:
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found


def _serve(moto: Moto, tmp: Path, processes: int, **extra: str) -> Served:
    people = [standin.new_user(f"proc{i}@example.com") for i in range(2)]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in standin.DUMMY_AWS.items():
            patch.setenv(name, value)
        pool_id, client_id, _ = standin.bootstrap(moto.url, people)
    port, metrics_port = free_port(), free_port()
    env = gateway_env(
        moto,
        pool_id,
        client_id,
        port,
        tmp / "data",
        GATEWAY_SERVER_PROCESSES=str(processes),
        GATEWAY_METRICS_HOST="127.0.0.1",
        GATEWAY_METRICS_PORT=str(metrics_port),
        **extra,
    )
    log = tmp / "gateway.log"
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    wait_http(url + "health", 60, process)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    return Served(process, url, metrics_url, tmp / "data", log, people, time.monotonic())


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    gateway = _serve(moto, tmp_path_factory.mktemp("processes"), 2)
    yield gateway
    if gateway.process.poll() is None:
        gateway.process.kill()
        gateway.process.wait(10)


def _get(url: str) -> int:
    """A fresh connection each time (urllib does not keep connections alive)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _metric(served: Served, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(served.metrics_url, timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _wait(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_processes_serve_one_port_and_requests_land_on_both(served: Served) -> None:
    children = served.children()
    assert len(children) == 2
    for n in range(24):
        assert _get(served.url + f"no-such-page-{n}") == 404
    _wait(lambda: sum(1 for e in served.lines() if e.get("path", "").startswith("/no-such")) == 24)
    pids = {e["pid"] for e in served.lines() if e.get("path", "").startswith("/no-such")}
    assert pids == set(children)


def test_metrics_sum_every_process(served: Served) -> None:
    before = _metric(served, "gateway_requests_total", route="other", code="4xx")
    for n in range(24):
        assert _get(served.url + f"counted-{n}") == 404
    _wait(lambda: sum(1 for e in served.lines() if e.get("path", "").startswith("/counted")) == 24)
    answered_by = {e["pid"] for e in served.lines() if e.get("path", "").startswith("/counted")}
    assert answered_by == set(served.children())  # both processes counted some
    # Whichever process answers the scrape counts the other's requests too.
    for _ in range(4):
        assert _metric(served, "gateway_requests_total", route="other", code="4xx") == before + 24
    assert _metric(served, "gateway_workers_max") == 50  # 25 each: the host's bound, shared


def test_a_sync_works_end_to_end_and_a_second_device_syncs_through_any_process(
    served: Served, tmp_path: Path
) -> None:
    assert len(served.children()) == 2
    user = served.users[0]
    one = Client(tmp_path / "one")
    one.login(user.email, user.password, served.url)
    one.add_note("from one")
    one.sync()
    two = Client(tmp_path / "two")
    two.login(user.email, user.password, served.url)
    two.sync()
    assert two.note_fronts() == one.note_fronts() == {"from one"}
    for n in range(3):  # new connections each time: both processes reach the one worker
        two.add_note(f"more {n}")
        two.sync()
    one.sync()
    assert one.note_fronts() == two.note_fronts()
    assert len(live_worker_pids(served.data_dir / "collections")) == 1
    _wait(lambda: _metric(served, "gateway_workers", state="live") == 1)
    one.close()
    two.close()


def test_a_child_that_dies_is_replaced(served: Served) -> None:
    time.sleep(max(0.0, START_GRACE + 1 - (time.monotonic() - served.started)))
    victim = served.children()[0]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: len(served.children()) == 2 and victim not in served.children())
    for _ in range(8):
        assert _get(served.url + "health") == 200
    assert any(e.get("msg") == "gateway process exited" for e in served.lines())


def test_sigterm_stops_every_process_and_worker(served: Served) -> None:
    children = served.children()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(60) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()
    assert live_worker_pids(served.data_dir / "collections") == []
    assert "gateway processes stopped" in {e.get("msg") for e in served.lines()}


def test_a_child_that_dies_during_start_up_stops_all_with_status_1(
    moto: Moto, tmp_path: Path
) -> None:
    gateway = _serve(moto, tmp_path, 2)
    os.kill(gateway.children()[0], signal.SIGKILL)  # within START_GRACE of its start
    assert gateway.process.wait(60) == 1
    assert "a gateway process failed during start-up; stopping all" in {
        e.get("msg") for e in gateway.lines()
    }
    assert live_worker_pids(gateway.data_dir / "collections") == []


def test_a_taken_port_fails_at_once_with_a_clear_line(moto: Moto, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
                "GATEWAY_DATA_DIR": str(tmp_path / "data"),
                "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_abc",
                "GATEWAY_COGNITO_CLIENT_ID": "client",
                "GATEWAY_SERVER_HOST": "127.0.0.1",
                "GATEWAY_SERVER_PORT": str(port),
                "GATEWAY_SERVER_PROCESSES": "2",
                "GATEWAY_METRICS_ENABLED": "false",
                "GATEWAY_SERVER_MIN_FREE_DISK_MEGS": "0",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode == 1
    assert "cannot listen" in process.stderr
