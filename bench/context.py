"""What every measure gets: the sizes for this mode, a scratch folder, moto, the collection."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import collection, procs
from bench.cognito import Pool, new_pool


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions. Full mode is for the report; quick mode proves the script works."""

    quick: bool
    #: how long the machine's busy share is sampled before each measure (recorded beside it)
    busy_sample_s: float = 1.0
    # 1: full upload/download
    collection_mb: float = 50.0
    full_sync_runs: int = 7
    # 2: meta latency while another user uploads in a loop
    contention_runs: int = 3
    contention_window_s: float = 15.0
    #: probing without an upload, after each run's uploads
    contention_idle_s: float = 5.0
    probe_interval_s: float = 0.01
    # 3: small-request overhead
    load_runs: int = 5
    load_duration_s: float = 3.0
    load_max_requests: int = 200_000
    concurrencies: tuple[int, ...] = (1, 16)
    # 4: login latency
    login_runs: int = 3
    cached_logins: int = 200
    warm_logins: int = 30
    cold_logins: int = 15
    # 5: Cognito calls
    burst_logins: int = 50
    ttl_users: int = 100
    ttl_logins: int = 1000
    ttl_concurrency: int = 16
    calls_runs: int = 3
    # 6: memory
    memory_runs: int = 3
    memory_settle_s: float = 1.0
    registry_accounts: int = 10_000
    workers_per_command: int = 4
    # 9: one node and three (only with --only 9)
    cluster_users: int = 12
    cluster_clients: int = 12
    # 7: many users
    many_users: int = 20
    many_runs: int = 5
    notes_per_sync: int = 20
    # 8: capacity (devices syncing normally in a loop; see measures/capacity.py)
    capacity_start: int = 16
    capacity_most: int = 256
    capacity_tolerance: float = 0.1
    capacity_window_s: float = 15.0
    capacity_think_s: tuple[float, float] = (1.0, 3.0)
    capacity_notes: int = 3
    capacity_reviews: int = 5
    capacity_media_every: int = 5
    capacity_budget_s: float = 300.0

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if not quick:
            return cls(quick=False)
        # Every measure's code path with the least waiting: two runs only where a measure's runs
        # alternate their order, two capacity steps (the ramp doubles once). Windows are just
        # long enough for some samples each (a probe every 10 ms, a sync every 0.1 s).
        return cls(
            quick=True,
            busy_sample_s=0.05,
            collection_mb=1.0,
            full_sync_runs=2,
            contention_runs=1,
            contention_window_s=0.5,
            contention_idle_s=0.2,
            load_runs=1,
            load_duration_s=0.1,
            login_runs=1,
            cached_logins=20,
            warm_logins=2,
            cold_logins=1,
            ttl_users=4,
            ttl_logins=40,
            calls_runs=1,
            memory_runs=1,
            memory_settle_s=0.1,
            registry_accounts=200,
            workers_per_command=1,
            many_users=2,
            many_runs=1,
            notes_per_sync=3,
            capacity_start=1,
            capacity_most=2,
            capacity_window_s=0.5,
            capacity_think_s=(0.05, 0.15),
            capacity_budget_s=20.0,
            cluster_users=3,
            cluster_clients=3,
        )


@dataclass
class Context:
    settings: Settings
    out: Path
    work: Path
    moto: procs.Service
    keep: bool = False
    #: This invocation's results so far, by measure number ("1"): a measure may report another's.
    results: dict[str, Any] = field(default_factory=dict)
    _collection: Path | None = field(default=None, init=False)

    @classmethod
    def open(cls, settings: Settings, out: Path, keep: bool) -> Context:
        work = Path(tempfile.mkdtemp(prefix="anki-bench-"))
        moto = procs.moto_server(work / "logs" / "moto.log")
        return cls(settings=settings, out=out, work=work, moto=moto, keep=keep)

    def close(self, failed: bool) -> None:
        self.moto.stop()
        if failed or self.keep:
            print(f"bench: scratch folder kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    @property
    def cognito_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto.port}"

    def pool(self, users: list[str] | None = None) -> Pool:
        pool = new_pool(self.cognito_endpoint)
        pool.add_users(users or [])
        return pool

    def folder(self, *parts: str) -> Path:
        path = self.work.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, name: str) -> Path:
        return self.folder("logs") / name

    def collection(self) -> Path:
        """The benchmark's big collection (made once per run, then copied per client)."""
        if self._collection is None:
            started = time.monotonic()
            self._collection = collection.make(self.folder("source"), self.settings.collection_mb)
            took = time.monotonic() - started
            size = self._collection.stat().st_size / 1e6
            print(f"bench: made a {size:.1f} MB collection in {took:.1f} s")
        return self._collection

    def gateway(
        self, name: str, pool: Pool, *, processes: int = 1, **settings: str
    ) -> procs.Gateway:
        return procs.Gateway(
            self.folder(name, "gateway-data"),
            pool.settings(),
            self.log(f"{name}-gateway.log"),
            processes=processes,
            **settings,
        )
