"""Prometheus metrics (prometheus-client). This module owns every metric object; the rest of the
gateway calls the small named functions below, so no handler wades through label plumbing.

Names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/): a
`gateway_` prefix, base units in the name (`_seconds`, `_bytes`), `_total` on counters. No label
ever carries an account name, an email, a username or a key: only fixed, small sets of values.

Counters and histograms live in this module's registry (`REGISTRY`), shared by every app in
the process; the gauges that describe one running gateway (its workers, accounts, disk and usage:
ops/gauges.py; the last backup and prune runs: backup/gauges.py, retention/gauges.py) are
collectors read at scrape time, handed to `render(*gauges)`, the exposition of both. This
module imports nothing of the gateway: whatever reads the running gateway lives above it and is
registered from there.

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

import functools
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector

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


# Every request counts in three metrics: their children (one per label value, from fixed sets)
# are looked up once, not per request (a lock and a tuple each; issue 18).
@functools.cache
def _request_children(route: str, status_class: int) -> tuple[Counter, Histogram]:
    return _REQUESTS.labels(route, f"{status_class}xx"), _REQUEST_SECONDS.labels(route)


@functools.cache
def _proxied_child(direction: str) -> Counter:
    return _PROXIED_BYTES.labels(direction)


def request(route: str, status: int, seconds: float) -> None:
    count, duration = _request_children(route, status // 100)
    count.inc()
    duration.observe(seconds)


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
    _proxied_child(direction).inc(count)


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


def render(*gauges: Collector) -> bytes:
    """The text exposition: the counters (of every gateway process), then `gauges` (collectors
    read at scrape time, handed in by the caller: ops/gauges.py)."""
    own = CollectorRegistry(auto_describe=False)
    for collector in gauges:
        own.register(collector)
    if not several_processes():
        return generate_latest(REGISTRY) + generate_latest(own)
    from prometheus_client import multiprocess

    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed)
    return generate_latest(summed) + generate_latest(own)
