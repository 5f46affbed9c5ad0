"""deploy/prometheus and deploy/grafana against the real thing: promtool checks and unit-tests
the alert rules, a real Prometheus (Debian's `prometheus`) scrapes a gateway during a real sync
and gives the counters back, and every query of the Grafana board names a metric the gateway
exports. .ci/run installs prometheus; without it these skip, except under CI=true."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ops.metricsserver import METRICS_PORT
from tests.ports import free_port
from tests.test_identity_e2e import PASSWORD, synced_device

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
BOARD = ROOT / "deploy" / "grafana" / "anki-gateway.json"


def need(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} must be installed in CI (.ci/run: Debian package prometheus)")
        pytest.skip(f"{name} not installed (Debian package prometheus)")
    return found


def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = need("promtool")
    for command in (
        [promtool, "check", "rules", str(RULES)],
        [promtool, "test", "rules", str(RULE_TESTS)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_really_fails_a_broken_rule(tmp_path: Path) -> None:
    promtool = need("promtool")
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 0.05", "> > 0.05", 1))
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True
    )
    assert result.returncode != 0


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    binary = need("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            f"scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
        )
        started.append(process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def query(base: str, expr: str) -> float | None:
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
            data = json.load(answer)
    except OSError:
        return None
    result = data.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def test_a_real_prometheus_scrapes_a_sync_and_gives_the_counters_back(
    cognito, tmp_path, start_gateway, prometheus
) -> None:
    from tests.test_metrics import metrics_url, scrape

    cognito.add_user("pia", PASSWORD, "pia@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    # Counters are the process's (other tests' gateways ran here before): count from here.
    before = scrape(metrics_url(gw))
    base = prometheus(f"127.0.0.1:{gw.app[METRICS_PORT]}")
    device = synced_device(tmp_path, gw, "p", "pia")
    device.add_media("clip.bin", os.urandom(30_000))
    device.sync()
    wanted = {
        'gateway_logins_total{outcome="ok"}': before.get('gateway_logins_total{outcome="ok"}', 0)
        + 1,
        'gateway_workers{state="live"}': 1.0,
        'gateway_accounts{status="active"}': 1.0,
        "gateway_worker_starts_total": before.get("gateway_worker_starts_total{}", 0) + 1,
    }
    deadline = time.monotonic() + 30
    got: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        got = {expr: query(base, expr) for expr in wanted}
        if got == wanted:
            break
        time.sleep(0.5)
    assert got == wanted
    uploaded = query(base, 'gateway_proxied_bytes_total{direction="upload"}')
    start = before.get('gateway_proxied_bytes_total{direction="upload"}', 0)
    assert uploaded is not None and uploaded - start > 30_000
    assert query(base, 'up{job="gateway"}') == 1.0
    device.close()


def test_every_query_of_the_grafana_board_names_an_exported_metric(
    cognito, tmp_path, start_gateway
) -> None:
    board = json.loads(BOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    assert len(exprs) >= 15
    cognito.add_user("gus", PASSWORD, "gus@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "g", "gus")
    url = f"http://127.0.0.1:{gw.app[METRICS_PORT]}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()  # noqa: S310
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    exported = families | {f + suffix for f in families for suffix in ("_bucket", "_count", "_sum")}
    # prometheus-client lists counters without their _total suffix in # TYPE lines.
    exported |= {f + "_total" for f in families}
    for expr in exprs:
        for name in re.findall(r"\b(gateway_[a-z_]+)", expr):
            assert name in exported, (name, expr)
    device.close()
