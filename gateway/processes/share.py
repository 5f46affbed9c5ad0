"""How many gateway processes, and each one's share of the host-wide bounds. Pure, but for
`usable_cores` (reads the cgroup's CPU quota).

    process_count(setting, cores, cluster) -> int   0: one per core (at least 1); a cluster
                                                    node (cluster.node_id set) runs one
    usable_cores() -> int                      cores this process may use (affinity, CPU quota)
    share(config, count) -> Config             the configuration one of `count` processes runs

A bound the operator set for the host is divided, rounded up, so `count` processes together
allow at most what one process allowed (plus count - 1 for the rounding): `workers.max_workers`
(memory: each worker is a stock server process), `server.max_requests_per_address` (a client
holding connections open), `auth.max_failures_per_user` / `_per_address` (password guessing:
connections land on any process, so the sum is what an attacker gets) and
`auth.recheck_calls_per_second` (the Cognito quota). A client whose requests all reach one
process meets its share sooner; the kernel spreads connections, not clients.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from gateway.config import Config

#: The process's cgroups, one "ID:CONTROLLERS:PATH" line each (man 7 cgroups).
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: those it may run on (`sched_getaffinity`), fewer when
    a CPU quota allows less (a container's `--cpus`, a Kubernetes CPU limit, systemd's
    `CPUQuota=`: they leave every core of the node visible). cgroup v2 `cpu.max` ("max 100000"
    or "QUOTA PERIOD", docs.kernel.org/admin-guide/cgroup-v2.html) or v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us` (-1: none), read under `cgroup_root` in the process's own cgroup (from
    `SELF_CGROUP`: without a cgroup namespace the root is the host's) and each of its parents
    up to the root, the smallest counting; a quota rounds up (1.5 CPUs: 2)."""
    cores = len(os.sched_getaffinity(0))
    v2, v1 = _own_cgroups(_read(SELF_CGROUP, 4096))
    quotas = [cpu_quota(_read(folder / "cpu.max")) for folder in _up_to(cgroup_root, v2)]
    v1_root = cgroup_root / "cpu"
    quotas += [
        cpu_quota(f"{_read(folder / 'cpu.cfs_quota_us')} {_read(folder / 'cpu.cfs_period_us')}")
        for folder in _up_to(v1_root, v1)
    ]
    known = [quota for quota in quotas if quota is not None]
    return max(1, min(cores, *known)) if known else max(1, cores)


def _own_cgroups(text: str) -> tuple[str, str]:
    """The process's cgroup v2 path and its v1 `cpu` controller's path ("/" when none)."""
    v2 = v1 = "/"
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _up_to(root: Path, path: str) -> list[Path]:
    """`root`/`path` and each parent folder up to `root` (never above it: no "..")."""
    names = [name for name in path.split("/") if name not in ("", ".", "..")]
    return [root.joinpath(*names[:depth]) for depth in range(len(names), -1, -1)]


def cpu_quota(text: str) -> int | None:
    """Whole CPUs from "QUOTA PERIOD" (microseconds each), rounded up; None: no quota ("max",
    -1, or not that shape)."""
    parts = text.split()
    if len(parts) != 2:
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return math.ceil(quota / period)


def _read(path: Path, most: int = 64) -> str:
    try:
        return path.read_text()[:most]
    except (OSError, UnicodeDecodeError):
        return ""


def process_count(setting: int, cores: int, cluster: bool = False) -> int:
    if cluster:
        return 1  # config validation refuses processes > 1 with a cluster node id
    return setting if setting > 0 else max(1, cores)


def _part(total: int, count: int) -> int:
    return max(1, math.ceil(total / count))


def share(config: Config, count: int) -> Config:
    if count <= 1:
        return config
    server, auth, workers = config.server, config.auth, config.workers
    return dataclasses.replace(
        config,
        server=dataclasses.replace(
            server, max_requests_per_address=_part(server.max_requests_per_address, count)
        ),
        auth=dataclasses.replace(
            auth,
            max_failures_per_user=_part(auth.max_failures_per_user, count),
            max_failures_per_address=_part(auth.max_failures_per_address, count),
            recheck_calls_per_second=auth.recheck_calls_per_second / count,
        ),
        workers=dataclasses.replace(
            workers,
            max_workers=_part(workers.max_workers, count),
            max_answers_on_disk=_part(workers.max_answers_on_disk, count),
        ),
    )
