"""The benchmark's quick mode runs end to end and writes every measure (bench/, issue 5).

Only proves the script works: quick-mode sizes are far too small for conclusions, so no figure
is compared with its target here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def numbers(obj: object) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in numbers(v)]
    if isinstance(obj, list):
        return [n for v in obj for n in numbers(v)]
    return []


@pytest.mark.timeout(150)
def test_quick_mode_writes_every_measure_with_numbers_and_a_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SYNC_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert results["meta"]["machine"]["cpus"] >= 1
    assert sorted(results["measures"], key=int) == [str(i) for i in range(1, 9)]
    for key, measure in results["measures"].items():
        assert "error" not in measure, (key, measure.get("error"))
        assert measure["met"] in (True, False, None), key
        found = numbers(measure["figures"])
        assert found, f"measure {key} has no numeric figures"
        assert any(math.isfinite(n) and n > 0 for n in found), key
        assert measure["summary"], key
    report = (tmp_path / "report.md").read_text()
    assert "| 8 |" in report and "Machine:" in report
    # Measure 3's floor (aiohttp and the worker link, no checks) beside the gateway.
    small = results["measures"]["3"]["figures"]["c1"]
    assert small["floor"]["throughput"]["median"] > 0 and "floor_added_p50_ms" in small
    assert "| 1 | floor |" in report
    if len(os.sched_getaffinity(0)) > 1:  # and in one process per core
        assert small["floor_cores"]["throughput"]["median"] > 0 and "| 1 | floor_cores |" in report
    capacity = results["measures"]["8"]["figures"]
    if len(os.sched_getaffinity(0)) > 1:  # the default gateway and one process, side by side
        assert capacity["gateway"]["processes"] > 1 and capacity["gateway_one"]["processes"] == 1
        assert "| gateway, one process |" in report and "**gateway, one process:" in report
