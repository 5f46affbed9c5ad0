"""How many processes, and each one's share of the host-wide bounds."""

from __future__ import annotations

import dataclasses
import os

import pytest

from gateway.processes.share import cpu_quota, process_count, share, usable_cores
from tests.conftest import fake_provider_config


@pytest.mark.parametrize(
    ("setting", "cores", "cluster", "expected"),
    [
        (0, 2, False, 2),
        (0, 1, False, 1),
        (0, 0, False, 1),
        (3, 2, False, 3),
        (1, 8, False, 1),
        (0, 8, True, 1),
        (1, 8, True, 1),
    ],
)
def test_process_count(setting: int, cores: int, cluster: bool, expected: int) -> None:
    assert process_count(setting, cores, cluster) == expected


def test_each_process_gets_its_share_rounded_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = fake_provider_config(tmp_path)
    config = dataclasses.replace(
        config,
        workers=dataclasses.replace(config.workers, max_workers=5, max_answers_on_disk=8),
        auth=dataclasses.replace(
            config.auth,
            max_failures_per_user=10,
            max_failures_per_address=1,
            recheck_calls_per_second=10.0,
        ),
        server=dataclasses.replace(config.server, max_requests_per_address=32),
    )
    two = share(config, 2)
    assert two.workers.max_workers == 3
    assert two.workers.max_answers_on_disk == 4
    assert two.auth.max_failures_per_user == 5
    assert two.auth.max_failures_per_address == 1  # never below 1
    assert two.auth.recheck_calls_per_second == 5.0
    assert two.server.max_requests_per_address == 16
    assert share(config, 1) is config


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),  # cgroup v2, no quota
        ("150000 100000\n", 2),  # --cpus 1.5: rounded up
        ("50000 100000", 1),  # half a CPU still runs one process
        ("400000 100000", 4),
        ("-1 100000", None),  # cgroup v1, no quota
        ("", None),
        ("garbage", None),
        ("0 100000", None),
    ],
)
def test_a_cpu_quota_is_read_in_whole_cpus(text: str, cpus: int | None) -> None:
    assert cpu_quota(text) == cpus


def test_usable_cores_follow_a_container_cpu_quota_below_the_visible_cores(tmp_path) -> None:
    """A pod with a 1-CPU limit on a node whose every core it sees runs one process, not one
    per node core (issue 18: `server.processes` 0 means the cores the host gives us)."""
    visible = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == visible
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1
    (v1 / "cpu.cfs_quota_us").write_text(f"{100000 * (visible + 8)}\n")
    assert usable_cores(tmp_path) == visible  # a quota above the cores: the cores


def test_usable_cores_follow_the_quota_of_the_processs_own_cgroup_and_its_parents(
    tmp_path, monkeypatch
) -> None:
    """Under systemd (`CPUQuota=` on the unit or its slice) or a container without a cgroup
    namespace, the cgroup file system's root is the host's: the quota is on the process's own
    cgroup (named in /proc/self/cgroup) or one of its parents, not at the root."""
    from gateway.processes import share as share_mod

    visible = len(os.sched_getaffinity(0))
    if visible < 2:
        pytest.skip("needs two usable cores to tell a quota from none")
    membership = tmp_path / "self-cgroup"
    monkeypatch.setattr(share_mod, "SELF_CGROUP", membership, raising=False)
    unit = tmp_path / "system.slice" / "gateway.service"
    unit.mkdir(parents=True)
    (unit / "cpu.max").write_text("max 100000\n")
    membership.write_text("0::/system.slice/gateway.service\n")
    assert usable_cores(tmp_path) == visible
    (unit / "cpu.max").write_text("100000 100000\n")  # CPUQuota=100% on the unit
    assert usable_cores(tmp_path) == 1
    (unit / "cpu.max").write_text("max 100000\n")
    (unit.parent / "cpu.max").write_text("150000 100000\n")  # on its slice: 2 CPUs
    assert usable_cores(tmp_path) == min(visible, 2)
    # cgroup v1: the cpu controller's hierarchy.
    v1 = tmp_path / "cpu" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    membership.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    assert usable_cores(tmp_path) == 1
