"""Per-process limits: what a worker's process has from its first instruction on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gateway.containment import MIB, Limits
from gateway.containment.rlimits import RlimitContainment

REPORT = (
    "import json, os, resource\n"
    "print(json.dumps({'data': resource.getrlimit(resource.RLIMIT_DATA),"
    " 'core': resource.getrlimit(resource.RLIMIT_CORE), 'nice': os.nice(0)}))"
)


def limits_in_child(box) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", REPORT], preexec_fn=box.enter, capture_output=True, check=True
    )
    return json.loads(out.stdout)


def test_a_worker_gets_its_memory_limit_no_core_and_a_lower_cpu_share() -> None:
    limits = Limits(memory_bytes=256 * MIB, pids=64, cpu_weight=100, nice=5)
    box = RlimitContainment(limits, "test").box("bob")
    got = limits_in_child(box)
    assert got == {"data": [256 * MIB] * 2, "core": [0, 0], "nice": os.nice(0) + 5}


def test_the_memory_limit_never_exceeds_a_hard_limit_the_gateway_has() -> None:
    # A gateway started with a lower hard RLIMIT_DATA (a container's, a shell's ulimit): raising
    # it in the child would fail the spawn, and so every worker start.
    gateway = (
        "import json, resource, subprocess, sys\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, ({256 * MIB}, {256 * MIB}))\n"
        "from gateway.containment import MIB, Limits\n"
        "from gateway.containment.rlimits import RlimitContainment\n"
        "box = RlimitContainment(Limits(512 * MIB, 64, 100, 0), 'test').box('bob')\n"
        f"out = subprocess.run([sys.executable, '-c', {REPORT!r}], preexec_fn=box.enter,"
        " capture_output=True, check=True)\n"
        "print(out.stdout.decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", gateway], capture_output=True, check=True)
    assert json.loads(out.stdout)["data"] == [256 * MIB] * 2
