"""cgroup v2 boxes, against a directory laid out as the cgroup2 file system presents it (the
kernel's enforcement is the end-to-end test's; this pins what the gateway writes and reads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.containment import MIB, Limits
from gateway.containment.cgroups import CgroupContainment, find, own_path

LIMITS = Limits(memory_bytes=512 * MIB, pids=64, cpu_weight=100, nice=5)


def cgroup_dir(path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    for name in ("cgroup.procs", "cgroup.subtree_control"):
        (path / name).write_text("")
    return path


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("0::/system.slice/gateway.service\n", "/system.slice/gateway.service"),
        ("12:memory:/docker/abc\n1:name=systemd:/\n0::/\n", "/"),  # hybrid: v2 part is "/"
        ("4:memory:/x\n3:cpu:/\n", None),  # cgroup v1 only
    ],
)
def test_own_cgroup_is_read_from_the_v2_line(text, path) -> None:
    assert own_path(text) == path


def test_a_directory_without_the_memory_controller_is_refused_with_the_reason(tmp_path) -> None:
    found = find(cgroup_dir(tmp_path / "own", controllers="cpu pids"))
    assert found == f"{tmp_path / 'own'} does not offer the memory controller(s)"


def test_a_host_without_a_cgroup2_mount_says_so(tmp_path) -> None:
    found = find(mount=tmp_path)  # no cgroup.controllers at the mount: v1 or hybrid
    assert isinstance(found, str) and "not a cgroup v2 mount" in found


def test_set_up_moves_the_gateway_to_a_leaf_and_boxes_carry_the_limits(tmp_path) -> None:
    own = cgroup_dir(tmp_path / "own")
    (own / "cgroup.procs").write_text("4242\n")
    assert find(own) == own
    contained = CgroupContainment.set_up(own, LIMITS)
    assert (own / "gateway" / "cgroup.procs").read_text() == "4242"
    assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (own / "workers" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (own / "workers" / "swap-probe").mkdir()  # a box an earlier gateway left: swept
    contained = CgroupContainment.set_up(own, LIMITS)
    assert not (own / "workers" / "swap-probe").exists()

    box = contained.box("bob")
    values = {
        name: (box.path / name).read_text()
        for name in ("memory.max", "memory.oom.group", "pids.max", "cpu.weight")
    }
    assert values == {
        "memory.max": str(512 * MIB),
        "memory.oom.group": "1",
        "pids.max": "64",
        "cpu.weight": "100",
    }
    assert box.path.parent == own / "workers" and box.path.name.startswith("bob.")
    assert contained.box("bob").path != box.path  # a new box never reuses a leaving one


def test_a_worker_joins_its_box_before_exec_and_its_oom_kill_is_read(tmp_path) -> None:
    own = cgroup_dir(tmp_path / "own")
    box = CgroupContainment.set_up(own, LIMITS).box("bob")
    (box.path / "cgroup.procs").write_text("")  # the kernel makes it with the directory
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        preexec_fn=box.enter,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (box.path / "cgroup.procs").read_text() == child.stdout.strip()
    (box.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert box.death(-9, "").detail.endswith("most likely the kernel's OOM killer")
    (box.path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert box.death(-9, "").detail == "SIGKILL, killed at its cgroup memory limit"
    for name in os.listdir(box.path):
        (box.path / name).unlink()  # the kernel's files vanish with the directory
    box.remove()
    assert not box.path.exists()
