"""Readiness (`GET /ready`): can this gateway log a user in and take a sync right now?

The answer is public, so it says only whether, and which of a few fixed problems:
    "registry not writable"       the registry cannot take a write now (`Registry.writable`;
                                  SQLite: its write lock cannot be taken within `PROBE_TIMEOUT`
                                  seconds, BEGIN IMMEDIATE on a connection of its own, rolled
                                  back: locked by another process, read-only; registry/sqlite.py)
    "collections folder missing"
    "low disk space"              the data folder's file system has less than `min_free_megs`
                                  MiB free for unprivileged users (statvfs `f_bavail`): logins
                                  write the registry, uploads the collections, both fail there
No paths, numbers or worker counts: how many users are active is for operators (metrics).

`problems()` is pure; `probe()` does I/O and blocks (run it in a thread).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Probe:
    registry_writable: bool
    collections_present: bool
    #: Bytes free for unprivileged users on the data folder's file system; 0 if unknown.
    free_bytes: int


def problems(found: Probe, min_free_megs: int) -> list[str]:
    """The public problems, in a fixed order; empty when ready. `min_free_megs` 0: no check."""
    out = []
    if not found.registry_writable:
        out.append("registry not writable")
    if not found.collections_present:
        out.append("collections folder missing")
    if found.free_bytes < min_free_megs * _MIB:
        out.append("low disk space")
    return out


def probe(registry_writable: bool, collections_dir: Path) -> Probe:
    return Probe(
        registry_writable=registry_writable,
        collections_present=collections_dir.is_dir(),
        free_bytes=free_bytes(collections_dir.parent),
    )


def free_bytes(folder: Path) -> int:
    """Bytes free for unprivileged users on the file system of `folder`; 0 if unknown."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize
