"""cgroup v2 boxes for workers, where the gateway may create cgroups.

Usable when the gateway's own cgroup v2 directory (from /proc/self/cgroup's "0::" line under
the cgroup2 mount, or `workers.cgroup_dir`) offers the memory, pids and cpu controllers and is
writable by the gateway: a systemd unit with `Delegate=yes`, a container run with
`--cgroupns=private` and a writable /sys/fs/cgroup. `find()` says which directory, or why not.

Layout made by `CgroupContainment.set_up(own, limits)` (cgroup v2 lets only leaves hold
processes, so the gateway moves out of its own cgroup first):

    <own>/gateway/             the gateway and whatever else ran in <own>
    <own>/workers/             all workers together: the same cpu.weight as the gateway, so
                               busy workers leave it at least half of the CPU
    <own>/workers/<account>.<n>/   one worker: memory.max, memory.swap.max 0, memory.oom.group
                               1 (the kernel kills the whole box), pids.max, cpu.weight

A worker joins its box in the child before exec (it writes its pid to the box's cgroup.procs),
so no instruction of it runs outside. `death()` reads the box's memory.events (oom_kill) to
tell a kill at the memory limit from any other exit; `remove()` deletes the box once the
process is reaped.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

from gateway.containment import Death, Limits, classify

log = logging.getLogger("gateway.containment")

CONTROLLERS = ("memory", "pids", "cpu")
MOUNT = Path("/sys/fs/cgroup")


def own_path(proc_self_cgroup: str) -> str | None:
    """The cgroup v2 path in /proc/self/cgroup's text ("0::/a/b" → "/a/b"), or None."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def find(configured: Path | None = None, mount: Path = MOUNT) -> Path | str:
    """The cgroup directory the gateway can put workers under, or why there is none."""
    if configured is None:
        try:
            path = own_path(Path("/proc/self/cgroup").read_text())
        except OSError as exc:
            return f"cannot read /proc/self/cgroup ({exc.strerror})"
        if path is None:
            return "this host has no cgroup v2 hierarchy (cgroup v1 only)"
        if not (mount / "cgroup.controllers").exists():
            return (
                f"{mount} is not a cgroup v2 mount (a hybrid or v1 host: the memory controller "
                "belongs to cgroup v1)"
            )
        configured = mount / path.lstrip("/")
    try:
        offered = (configured / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"{configured} is not a cgroup v2 directory ({exc.strerror})"
    missing = [c for c in CONTROLLERS if c not in offered]
    if missing:
        return f"{configured} does not offer the {', '.join(missing)} controller(s)"
    for name in ("cgroup.procs", "cgroup.subtree_control", "."):
        if not os.access(configured / name, os.W_OK):
            return f"{configured / name} is not writable (no delegated cgroup)"
    return configured


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _remove(box: Path) -> None:
    try:
        box.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        # A grandchild may still be in it; the next start-up's sweep removes it.
        log.warning("cannot remove a worker's cgroup", extra={"error": exc.strerror})


class CgroupBox:
    def __init__(self, path: Path, limits: Limits) -> None:
        path.mkdir()
        self.path = path
        try:
            _write(path / "memory.max", str(limits.memory_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")  # the limit must not turn into swapping
            _write(path / "memory.oom.group", "1")
            _write(path / "pids.max", str(limits.pids))
            _write(path / "cpu.weight", str(limits.cpu_weight))
        except OSError:
            self.remove()
            raise
        # Opened in the child by path: computed here, where allocating is safe.
        self._procs = os.fsencode(path / "cgroup.procs")

    def enter(self) -> None:
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def oom_kills(self) -> int:
        try:
            text = (self.path / "memory.events").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def death(self, returncode: int | None, tail: str) -> Death:
        return classify(returncode, tail, oom_killed=self.oom_kills() > 0)

    def remove(self) -> None:
        _remove(self.path)


class CgroupContainment:
    mode = "cgroup"

    def __init__(self, workers: Path, limits: Limits, reason: str) -> None:
        self.limits = limits
        self.reason = reason
        self._workers = workers
        self._serial = itertools.count(1)

    @classmethod
    def set_up(cls, own: Path, limits: Limits) -> CgroupContainment:
        """Moves what runs in `own` into `own/gateway`, enables the controllers below `own`,
        and makes `own/workers` (module doc). Boxes left by an earlier gateway are removed."""
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        gateway = own / "gateway"
        gateway.mkdir(exist_ok=True)
        for pid in (own / "cgroup.procs").read_text().split():
            try:
                _write(gateway / "cgroup.procs", pid)
            except ProcessLookupError:
                pass  # exited meanwhile
        _write(own / "cgroup.subtree_control", enable)
        workers = own / "workers"
        workers.mkdir(exist_ok=True)
        _write(workers / "cgroup.subtree_control", enable)
        for stale in workers.iterdir():
            if stale.is_dir():
                _remove(stale)
        return cls(workers, limits, f"a writable cgroup v2 subtree at {own}")

    def box(self, account: str) -> CgroupBox:
        # Pid and serial keep a new box apart from one still being removed, also one an
        # earlier gateway process could not remove.
        name = f"{account}.{os.getpid()}.{next(self._serial)}"
        return CgroupBox(self._workers / name, self.limits)
