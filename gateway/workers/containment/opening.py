"""Choosing the containment in force at start-up (`open_containment`): the contract is in the
package docstring (gateway/workers/containment/__init__.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.workers.containment import cgroups, rlimits
from gateway.workers.containment.box import (
    MIB,
    Containment,
    ContainmentUnavailable,
    Limits,
)

log = logging.getLogger("gateway.containment")


def open_containment(limits: Limits, mode: str = "auto", cgroup_dir: str = "") -> Containment:
    """The containment in force (module doc); logs which one, and why, at INFO."""
    chosen: Containment
    if mode == "rlimit":
        chosen = rlimits.RlimitContainment(limits, "configured (workers.containment: rlimit)")
    else:
        found = cgroups.find(Path(cgroup_dir) if cgroup_dir else None)
        if isinstance(found, Path):
            chosen = cgroups.CgroupContainment.set_up(found, limits)
        elif mode == "cgroup":
            raise ContainmentUnavailable(f"workers.containment is cgroup, but {found}")
        else:
            chosen = rlimits.RlimitContainment(limits, found)
    log.info(
        "worker containment",
        extra={
            "mode": chosen.mode,
            "reason": chosen.reason,
            "memory_megs": limits.memory_bytes // MIB,
            "pids": limits.pids,
            "cpu_weight": limits.cpu_weight,
            "nice": limits.nice,
        },
    )
    return chosen
