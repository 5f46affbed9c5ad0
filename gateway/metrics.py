"""Prometheus metrics (prometheus-client). This module owns every metric object; the rest of the
gateway calls the small named functions below, so no handler wades through label plumbing.

Names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/): a
`gateway_` prefix, base units in the name (`_seconds`, `_bytes`), `_total` on counters. No label
ever carries an account name, an email, a username or a key: only fixed, small sets of values.

Counters and histograms live in this module's registry (`REGISTRY`), shared by every app in
the process; the gauges that describe one running gateway (its workers, accounts and disk) are
read at scrape time from that app (`AppCollector`). `render(app, accounts)` is the exposition of
both; `accounts` ({status: count}, or None when the registry could not answer) is read by the
caller, since registry calls are coroutines. Usage totals over all accounts come from the app's
last walk (ops/usagetotals.py), never from a walk per scrape.

    request(route, status, seconds)        route: login sync media provision portal health cluster
                                            other
    login(outcome)                          ok cached bad_credentials challenge limited
                                            unavailable misconfigured bad_request worker_failed
    cognito_call(operation, seconds, kind)  kind: None (ok) rejected unavailable misconfigured
                                            locked_out trigger_refused
    revocation(reason)                      suspended signed_out deleted
    recheck_postponed()
    recheck_deferred()                      a re-check put off: its calls-per-second budget spent
    provisioning(outcome)                   created existing refused unavailable error
    export(outcome)                         sent limit running busy nothing disk failed
    worker_started(seconds) / worker_died(reason) / worker_evicted() / queue_wait(seconds) /
    worker_unavailable()                    reason: memory crash
    containment(mode)                       the worker containment in force (info gauge)
    proxied(direction, count)               direction: upload (client → worker), download
    registry_error(kind)                    kind: throttled unavailable misconfigured
    registry_stale_answer()                 a key answered from memory while DynamoDB failed
    cluster_route(outcome)                  here forwarded redirected unavailable (several nodes)
    cluster_refused(reason)                 a node-to-node request refused (signing.REASONS)
    cluster_ownership(change)               placed taken_over moved
    cluster_heartbeat_failed()
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from aiohttp import web

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request latencies: a cached login is ~1 ms, a sync request a few ms, a full sync minutes.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

_REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered, by route kind and status class.",
    ["route", "code"],
    registry=REGISTRY,
)
_REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer a request, by route kind.",
    ["route"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
_LOGINS = Counter(
    "gateway_logins_total",
    "Anki logins (sync/hostKey), by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
_COGNITO_SECONDS = Histogram(
    "gateway_cognito_request_duration_seconds",
    "Cognito API calls, by operation.",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
_COGNITO_ERRORS = Counter(
    "gateway_cognito_errors_total",
    "Cognito calls that failed, by operation and kind.",
    ["operation", "kind"],
    registry=REGISTRY,
)
_REVOCATIONS = Counter(
    "gateway_revocations_total",
    "Accounts whose host keys were revoked, by reason.",
    ["reason"],
    registry=REGISTRY,
)
_POSTPONED = Counter(
    "gateway_rechecks_postponed_total",
    "Re-checks of a key's owner put off because Cognito was unavailable.",
    registry=REGISTRY,
)
_DEFERRED = Counter(
    "gateway_rechecks_deferred_total",
    "Re-checks of a key's owner put off because auth.recheck_calls_per_second was spent.",
    registry=REGISTRY,
)
_PROVISIONING = Counter(
    "gateway_provisioning_total",
    "POST /provision-user answers, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
_EXPORTS = Counter(
    "gateway_exports_total",
    '"Download my data" (.colpkg) requests on the portal, by outcome.',
    ["outcome"],
    registry=REGISTRY,
)
_WORKER_STARTS = Counter(
    "gateway_worker_starts_total", "Sync server processes started.", registry=REGISTRY
)
_WORKER_START_SECONDS = Histogram(
    "gateway_worker_start_duration_seconds",
    "Time from starting a sync server to its first healthy answer.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
_WORKER_CRASHES = Counter(
    "gateway_worker_crashes_total",
    "Sync servers found dead (not stopped by us), whatever the reason.",
    registry=REGISTRY,
)
_WORKER_KILLS = Counter(
    "gateway_worker_memory_kills_total",
    "Sync servers that died at their memory limit (workers.max_memory_megs).",
    registry=REGISTRY,
)
_CONTAINMENT = Gauge(
    "gateway_worker_containment",
    "1 for the worker containment mode in force: cgroup (v2) or rlimit (per process).",
    ["mode"],
    registry=REGISTRY,
)
_WORKER_EVICTIONS = Counter(
    "gateway_worker_evictions_total",
    "Idle sync servers stopped early to make room for another account.",
    registry=REGISTRY,
)
_QUEUE_SECONDS = Histogram(
    "gateway_worker_queue_wait_seconds",
    "Time requests waited for a free worker slot.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
_WORKER_UNAVAILABLE = Counter(
    "gateway_worker_unavailable_total",
    "Requests answered 503 because no worker slot freed in time.",
    registry=REGISTRY,
)
_PROXIED_BYTES = Counter(
    "gateway_proxied_bytes_total",
    "Body bytes proxied, upload (client to sync server) and download.",
    ["direction"],
    registry=REGISTRY,
)

_REGISTRY_ERRORS = Counter(
    "gateway_registry_errors_total",
    "Registry (DynamoDB) calls that failed after botocore's retries, by kind.",
    ["kind"],
    registry=REGISTRY,
)
_REGISTRY_STALE = Counter(
    "gateway_registry_stale_answers_total",
    "Host keys answered from this node's memory because the registry could not be read.",
    registry=REGISTRY,
)
_CLUSTER_ROUTES = Counter(
    "gateway_cluster_requests_total",
    "Admitted sync requests on a cluster node, by where they went: served here, forwarded to "
    "the owner node, redirected (308) to its public URL, or unavailable (503: owner down).",
    ["outcome"],
    registry=REGISTRY,
)
_CLUSTER_REFUSED = Counter(
    "gateway_cluster_refused_total",
    "Node-to-node requests refused, by reason (unsigned, forged, outside the replay window).",
    ["reason"],
    registry=REGISTRY,
)
_CLUSTER_OWNERSHIP = Counter(
    "gateway_cluster_ownership_changes_total",
    "Owner items this node wrote: accounts placed, taken over after a lease, moved away.",
    ["change"],
    registry=REGISTRY,
)
_CLUSTER_HEARTBEAT_FAILURES = Counter(
    "gateway_cluster_heartbeat_failures_total",
    "Heartbeats of this node that the directory did not take.",
    registry=REGISTRY,
)


_QUOTA_REFUSED = Counter(
    "gateway_quota_refused_total",
    "Sync requests refused because an account reached a storage limit, by method.",
    ["method"],
    registry=REGISTRY,
)


def route_kind(path: str, prefix: str) -> str:
    """The fixed label of a request path (never the path itself: it is the client's text)."""
    rest = path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")
    if rest == "sync/hostKey":
        return "login"
    for start, kind in (
        ("sync/", "sync"),
        ("msync/", "media"),
        ("provision-user", "provision"),
        ("account", "portal"),
        ("health", "health"),
        ("ready", "health"),
        ("metrics", "health"),
        ("_cluster/", "cluster"),
    ):
        if rest.startswith(start):
            return kind
    return "other"


def request(route: str, status: int, seconds: float) -> None:
    _REQUESTS.labels(route, f"{status // 100}xx").inc()
    _REQUEST_SECONDS.labels(route).observe(seconds)


def login(outcome: str) -> None:
    _LOGINS.labels(outcome).inc()


def cognito_call(operation: str, seconds: float, kind: str | None) -> None:
    _COGNITO_SECONDS.labels(operation).observe(seconds)
    if kind is not None:
        _COGNITO_ERRORS.labels(operation, kind).inc()


def export(outcome: str) -> None:
    _EXPORTS.labels(outcome).inc()


def revocation(reason: str) -> None:
    _REVOCATIONS.labels(reason).inc()


def recheck_postponed() -> None:
    _POSTPONED.inc()


def recheck_deferred() -> None:
    _DEFERRED.inc()


def provisioning(outcome: str) -> None:
    _PROVISIONING.labels(outcome).inc()


def worker_started(seconds: float) -> None:
    _WORKER_STARTS.inc()
    _WORKER_START_SECONDS.observe(seconds)


def worker_died(reason: str) -> None:
    """A worker exited unasked; `reason` "memory" (at its limit) or "crash"."""
    _WORKER_CRASHES.inc()
    if reason == "memory":
        _WORKER_KILLS.inc()


def containment(mode: str) -> None:
    for each in ("cgroup", "rlimit"):
        _CONTAINMENT.labels(each).set(1 if each == mode else 0)


def worker_evicted() -> None:
    _WORKER_EVICTIONS.inc()


def queue_wait(seconds: float) -> None:
    _QUEUE_SECONDS.observe(seconds)


def worker_unavailable() -> None:
    _WORKER_UNAVAILABLE.inc()


def proxied(direction: str, count: int) -> None:
    _PROXIED_BYTES.labels(direction).inc(count)


def registry_error(kind: str) -> None:
    _REGISTRY_ERRORS.labels(kind).inc()


def registry_stale_answer() -> None:
    _REGISTRY_STALE.inc()


def quota_refused(method: str) -> None:
    _QUOTA_REFUSED.labels(method).inc()


def cluster_route(outcome: str) -> None:
    _CLUSTER_ROUTES.labels(outcome).inc()


def cluster_refused(reason: str) -> None:
    _CLUSTER_REFUSED.labels(reason).inc()


def cluster_ownership(change: str) -> None:
    _CLUSTER_OWNERSHIP.labels(change).inc()


def cluster_heartbeat_failed() -> None:
    _CLUSTER_HEARTBEAT_FAILURES.inc()


class AppCollector(Collector):
    """Gauges read from one running gateway at scrape time: workers, accounts, free disk."""

    def __init__(
        self, app: web.Application, accounts: dict[str, int] | None, *, workers: bool = True
    ) -> None:
        self._app = app
        self._accounts = accounts
        self._workers = workers

    def collect(self) -> Iterator[Any]:
        from gateway.appkeys import CONFIG, POOL

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
        from gateway.backup.snapshot import last_backup

        state = last_backup(app[CONFIG].data_dir)
        if state is not None:
            finished = GaugeMetricFamily(
                "gateway_backup_last_success_timestamp_seconds",
                "When the last backup finished (python -m gateway backup), in Unix time.",
            )
            finished.add_metric([], state["finished"])
            skipped = GaugeMetricFamily(
                "gateway_backup_missed_accounts",
                "Accounts the last backup could not copy consistently within its bound.",
            )
            skipped.add_metric([], state["missed"])
            yield from (finished, skipped)
        yield from _prune(app)


def _prune(app: web.Application) -> Iterator[Any]:
    """The last `accounts prune` run (another process: read from its state file)."""
    from gateway.appkeys import CONFIG
    from gateway.retention.prune import last_run

    state = last_run(app[CONFIG].data_dir)
    if state is None:
        return
    finished = GaugeMetricFamily(
        "gateway_prune_last_run_timestamp_seconds",
        "When `accounts prune` last finished (a dry run too), in Unix time.",
    )
    finished.add_metric([], state["finished"])
    counted = GaugeMetricFamily(
        "gateway_prune_last_run_accounts",
        "Accounts of the last `accounts prune` run, by outcome (would_delete: a dry run).",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        counted.add_metric([outcome], state.get(outcome, 0))
    yield from (finished, counted)


#: `accounts prune` outcomes (retention/prune.py).
OUTCOMES = ("deleted", "would_delete", "skipped", "failed")


def _usage(app: web.Application) -> Iterator[Any]:
    """Usage totals over all accounts, as the last walk found them (ops/usagetotals.py)."""
    from gateway.appkeys import USAGE

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


def several_processes() -> bool:
    """True in one of several gateway processes (gateway/processes/): prometheus_client's
    multiprocess mode, each process's values in files of one folder, summed at scrape time."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


#: The worker gauges when several processes serve: each sets its own, a scrape sums the live
#: processes' (not registered: only the multiprocess collector reads them).
_WORKERS_SHARED = Gauge(
    "gateway_workers",
    "Sync server processes, by state.",
    ["state"],
    multiprocess_mode="livesum",
    registry=None,
)
_WORKERS_MAX_SHARED = Gauge(
    "gateway_workers_max",
    "The bound on sync server processes (workers.max_workers).",
    multiprocess_mode="livesum",
    registry=None,
)


def workers_now(stats: dict[str, int]) -> None:
    """Publish this process's worker counts (several processes only; see `render`)."""
    for state in ("live", "busy", "starting"):
        _WORKERS_SHARED.labels(state).set(stats.get(state, 0))
    _WORKERS_MAX_SHARED.set(stats.get("max", 0))


def render(app: web.Application, accounts: dict[str, int] | None) -> bytes:
    """The text exposition: the counters (of every gateway process) and this app's gauges.
    `accounts`: {status: count} from the registry, or None (the gauge has no samples then)."""
    own = CollectorRegistry(auto_describe=False)
    shared = several_processes()
    own.register(AppCollector(app, accounts, workers=not shared))
    if not shared:
        return generate_latest(REGISTRY) + generate_latest(own)
    from prometheus_client import multiprocess

    from gateway.appkeys import POOL

    workers_now(app[POOL].stats())
    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed)
    return generate_latest(summed) + generate_latest(own)
