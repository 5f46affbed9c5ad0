"""The gauges of one running gateway, read at scrape time from its app: workers by state and
their bound, accounts by status, the data folder's file system (free and size, bytes), and the
usage totals and quota shares of the last walk (ops/usagetotals.py; never a walk per scrape).

    AppGauges(app, accounts, workers=True)
                               a prometheus-client `Collector`; `accounts` is {status: count}
                               from the registry, read by the caller since registry calls are
                               coroutines, or None when it could not answer (no samples then);
                               workers=False: the worker gauges are summed over several
                               processes instead (metrics.workers_now)

    render(app, accounts) -> bytes
                               the exposition: the counters, these gauges, then the collectors
                               the app registered (appkeys.GAUGES: the last backup and prune runs)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway import metrics
from gateway.appkeys import CONFIG, GAUGES, POOL, USAGE


class AppGauges(Collector):
    """Gauges read from one running gateway at scrape time: workers, accounts, free disk."""

    def __init__(
        self, app: web.Application, accounts: dict[str, int] | None, *, workers: bool = True
    ) -> None:
        self._app = app
        self._accounts = accounts
        self._workers = workers

    def collect(self) -> Iterator[Any]:
        app = self._app
        workers = GaugeMetricFamily(
            "gateway_workers", "Sync server processes, by state.", labels=["state"]
        )
        stats = app[POOL].stats()
        for state in ("live", "busy", "starting"):
            workers.add_metric([state], stats.get(state, 0))
        workers_max = GaugeMetricFamily(
            "gateway_workers_max", "The bound on sync server processes (workers.max_workers)."
        )
        workers_max.add_metric([], stats.get("max", 0))
        accounts = GaugeMetricFamily(
            "gateway_accounts", "Accounts in the registry, by status.", labels=["status"]
        )
        if self._accounts is not None:
            for status in ("active", "disabled", "suspended"):
                accounts.add_metric([status], self._accounts.get(status, 0))
        disk = GaugeMetricFamily(
            "gateway_data_free_bytes", "Free space of the data folder's file system."
        )
        disk_total = GaugeMetricFamily(
            "gateway_data_size_bytes", "Size of the data folder's file system."
        )
        usage = shutil.disk_usage(app[CONFIG].data_dir)
        disk.add_metric([], usage.free)
        disk_total.add_metric([], usage.total)
        if self._workers:
            yield from (workers, workers_max)
        yield from (accounts, disk, disk_total)
        yield from _usage(app)


def _usage(app: web.Application) -> Iterator[Any]:
    """Usage totals over all accounts, as the last walk found them (ops/usagetotals.py)."""
    keeper = app.get(USAGE)
    totals = keeper.latest if keeper is not None else None
    if totals is None:
        return
    for name, text, value in (
        ("gateway_usage_collection_bytes", "Collection files of all accounts.", "collection_bytes"),
        ("gateway_usage_media_files", "Media files of all accounts.", "media_files"),
        ("gateway_usage_media_bytes", "Media bytes of all accounts.", "media_bytes"),
        ("gateway_usage_account_folders", "Account folders counted.", "accounts"),
        (
            "gateway_usage_computed_timestamp_seconds",
            "When the usage totals were last computed (every few minutes), in Unix time.",
            "computed_at",
        ),
    ):
        family = GaugeMetricFamily(name, text)
        family.add_metric([], getattr(totals, value))
        yield family
    over = GaugeMetricFamily(
        "gateway_quota_accounts_over",
        "Accounts whose stored collection or media is over its limit.",
    )
    over.add_metric([], totals.over_quota)
    yield over
    for name, shares in (("collection", totals.collection_shares), ("media", totals.media_shares)):
        yield _share_histogram(name, shares)


#: Shares of a limit (1.0 = at the limit) the quota histograms count accounts under.
QUOTA_SHARE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.5, 2.0)


def _share_histogram(kind: str, shares: tuple[float, ...]) -> HistogramMetricFamily:
    """Accounts by how much of their `kind` limit they use (the last walk; unlimited: 0)."""
    family = HistogramMetricFamily(
        f"gateway_quota_{kind}_share",
        f"Accounts by their stored {kind} as a share of its limit (1 = at the limit).",
    )
    buckets = [(str(b), sum(1 for s in shares if s <= b)) for b in QUOTA_SHARE_BUCKETS]
    family.add_metric([], buckets + [("+Inf", len(shares))], sum(shares))
    return family


def render(app: web.Application, accounts: dict[str, int] | None) -> bytes:
    shared = metrics.several_processes()
    if shared:
        # Several gateway processes: each publishes its workers; the scrape sums them.
        metrics.workers_now(app[POOL].stats())
    return metrics.render(AppGauges(app, accounts, workers=not shared), *app.get(GAUGES, ()))
