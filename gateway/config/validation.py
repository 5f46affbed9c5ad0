"""Validation: `validate(config)` lists every contradiction and out-of-range value of a loaded
`Config` (empty when valid); `region_of(cognito)` is the region a user pool id names. Pure."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from urllib.parse import urlsplit

from gateway.config.schema import (
    MAX_CACHE_TTL,
    MAX_REGISTRY_CACHE,
    REGISTRY_BACKENDS,
    ClusterConfig,
    CognitoConfig,
    Config,
    PortalConfig,
    QuotaConfig,
    RegistryConfig,
    WorkersConfig,
)

DELETE_ACTIONS = {"delete", "disable", "keep"}
CONTAINMENT_MODES = ("auto", "cgroup", "rlimit")
AUTH_FLOWS = {"ADMIN_USER_PASSWORD_AUTH", "ADMIN_NO_SRP_AUTH"}
_POOL_ID = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d)_[0-9A-Za-z]+$")


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE,
)


def _validate_portal(portal: PortalConfig) -> list[str]:
    problems = []
    if portal.delete_cognito_user not in DELETE_ACTIONS:
        problems.append("portal.delete_cognito_user: one of " + ", ".join(sorted(DELETE_ACTIONS)))
    url = portal.public_url
    if url and (not re.match(r"^https?://[^/\s]+/(\S*/)?$", url)):
        problems.append(
            "portal.public_url: an http(s) URL ending in '/', e.g. https://sync.example.com/"
        )
    if portal.host:
        if not _HOST_NAME.fullmatch(portal.host):
            problems.append(
                "portal.host: a host name without scheme or port, e.g. signup.example.com"
            )
        elif not url:
            problems.append(
                "portal.host: needs portal.public_url (the sync URL, on the other host, that the "
                "set-up page shows)"
            )
        elif (urlsplit(url).hostname or "") == portal.host.lower():
            problems.append("portal.host: must differ from the host of portal.public_url")
        if not portal.enabled:
            problems.append("portal.host: needs portal.enabled: true")
    if not portal.service_name.strip() or len(portal.service_name) > 80:
        problems.append("portal.service_name: 1 to 80 characters")
    return problems


_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
STORAGE_MODES = {"local", "shared"}


def _validate_cluster(cluster: ClusterConfig) -> list[str]:
    if not cluster.enabled:
        return []
    problems = []
    if not _NODE_ID.match(cluster.node_id):
        problems.append("cluster.node_id: 1 to 40 letters, digits, '-' or '_'")
    for name, url, required in (
        ("internal_url", cluster.internal_url, True),
        ("public_url", cluster.public_url, False),
    ):
        if (url or required) and not re.match(r"^https?://[^/\s]+/(\S*/)?$", url):
            problems.append(
                f"cluster.{name}: an http(s) URL ending in '/', e.g. http://10.0.1.7:8080/"
            )
    if cluster.storage not in STORAGE_MODES:
        problems.append('cluster.storage: "local" or "shared"')
    if not 0 < cluster.heartbeat_seconds <= cluster.lease_seconds / 2:
        problems.append("cluster.heartbeat_seconds: above 0 and at most half of lease_seconds")
    if cluster.max_clock_skew_seconds <= 0:
        problems.append("cluster.max_clock_skew_seconds: must be greater than 0")
    return problems


def _validate_registry(r: RegistryConfig) -> list[str]:
    problems = []
    if r.backend not in REGISTRY_BACKENDS:
        problems.append("registry.backend: one of " + ", ".join(sorted(REGISTRY_BACKENDS)))
    if not re.match(r"^[A-Za-z0-9_.-]{3,255}$", r.table):
        problems.append("registry.table: 3 to 255 letters, digits, '_', '-' or '.'")
    if r.endpoint_url and not re.match(r"^https?://[^/\s]+/?$", r.endpoint_url):
        problems.append("registry.endpoint_url: an http(s) URL, e.g. http://127.0.0.1:5000")
    for name, value in (
        ("registry.cache_seconds", r.cache_seconds),
        ("registry.connect_timeout", r.connect_timeout),
        ("registry.read_timeout", r.read_timeout),
        ("registry.max_concurrency", r.max_concurrency),
    ):
        if value <= 0:
            problems.append(f"{name}: must be greater than 0")
    if r.cache_seconds > MAX_REGISTRY_CACHE:
        problems.append(
            f"registry.cache_seconds: at most {MAX_REGISTRY_CACHE} (a sign-out through another"
            " node takes effect here only after it)"
        )
    if r.stale_seconds < 0:
        problems.append("registry.stale_seconds: must be 0 (never) or more")
    return problems


def _validate_containment(w: WorkersConfig) -> list[str]:
    problems = []
    if w.containment not in CONTAINMENT_MODES:
        problems.append(f"workers.containment: must be one of {', '.join(CONTAINMENT_MODES)}")
    if w.max_memory_megs < 64:
        problems.append("workers.max_memory_megs: at least 64 (an idle worker uses about 30)")
    if w.max_pids < 8:
        problems.append("workers.max_pids: at least 8")
    if not 1 <= w.cpu_weight <= 10000:
        problems.append("workers.cpu_weight: 1 to 10000")
    if not 0 <= w.nice <= 19:
        problems.append("workers.nice: 0 to 19")
    return problems


def validate(config: Config, *, identity: bool = True) -> list[str]:
    """Cross-field checks; pure. Returns every problem found. `identity` False: the Cognito
    user pool and app client are not required (commands that never call Cognito: backups,
    restores, `accounts list|quota|export`); set ones are still checked."""
    problems: list[str] = _validate_cluster(config.cluster)
    if config.cluster.enabled and config.secret is None:
        problems.append(
            "secret: required with cluster.node_id (every node derives keys and signs "
            "node-to-node requests with the same secret)"
        )
    c, s, a, w, p = config.cognito, config.server, config.auth, config.workers, config.provision
    if not c.user_pool_id:
        if identity:
            problems.append("cognito.user_pool_id: required (GATEWAY_COGNITO_USER_POOL_ID)")
    elif not _POOL_ID.match(c.user_pool_id):
        problems.append(f"cognito.user_pool_id: {c.user_pool_id!r} is not a user pool id")
    if not c.client_id and identity:
        problems.append("cognito.client_id: required (GATEWAY_COGNITO_CLIENT_ID)")
    problems += _validate_portal(config.portal)
    problems += _validate_registry(config.registry)
    for f in dataclasses.fields(QuotaConfig):
        if getattr(config.quota, f.name) < 0:
            problems.append(f"quota.{f.name}: 0 (unlimited) or more")
    m = config.metrics
    if not 0 <= m.port <= 65535:
        problems.append("metrics.port: 0 to 65535")
    token = m.bearer_token.reveal() if m.bearer_token is not None else None
    if token is not None and len(token) < 16:
        problems.append("metrics.bearer_token: too short (at least 16 characters)")
    if c.auth_flow not in AUTH_FLOWS:
        problems.append(f"cognito.auth_flow: must be one of {sorted(AUTH_FLOWS)}")
    if c.endpoint_url and not c.local_stand_in:
        problems.append(
            "cognito.endpoint_url: points Cognito calls away from AWS; allowed only with "
            "cognito.local_stand_in: true (local mode). Remove it for production."
        )
    if c.local_stand_in and not _is_loopback_url(c.endpoint_url):
        problems.append(
            "cognito.local_stand_in: needs cognito.endpoint_url on a loopback or "
            "compose-internal address"
        )
    if not 0 <= s.processes <= 256:
        problems.append("server.processes: 0 (one per core) to 256")
    if s.processes > 1 and config.cluster.enabled:
        problems.append("server.processes: a cluster node runs one process (0 or 1)")
    if not a.recheck_calls_per_second > 0:
        problems.append("auth.recheck_calls_per_second: must be greater than 0")
    if not 1 <= s.port <= 65535:
        problems.append("server.port: must be 1-65535")
    if (
        not s.path_prefix.startswith("/")
        or not s.path_prefix.endswith("/")
        or "//" in s.path_prefix
    ):
        problems.append('server.path_prefix: must start and end with "/", e.g. "/" or "/anki/"')
    for name, value in (
        ("cognito.connect_timeout", c.connect_timeout),
        ("cognito.read_timeout", c.read_timeout),
        ("cognito.max_concurrency", c.max_concurrency),
        ("auth.cache_ttl_seconds", a.cache_ttl_seconds),
        ("auth.cache_max_entries", a.cache_max_entries),
        ("auth.max_failures_per_user", a.max_failures_per_user),
        ("auth.max_failures_per_address", a.max_failures_per_address),
        ("auth.failure_window_seconds", a.failure_window_seconds),
        ("auth.recheck_seconds", a.recheck_seconds),
        ("server.header_timeout_seconds", s.header_timeout_seconds),
        ("server.keepalive_seconds", s.keepalive_seconds),
        ("server.body_idle_timeout_seconds", s.body_idle_timeout_seconds),
        ("server.max_requests_per_address", s.max_requests_per_address),
        ("workers.max_workers", w.max_workers),
        ("workers.idle_timeout_seconds", w.idle_timeout_seconds),
        ("workers.start_timeout_seconds", w.start_timeout_seconds),
        ("workers.queue_timeout_seconds", w.queue_timeout_seconds),
        ("workers.max_payload_megs", w.max_payload_megs),
        ("workers.max_inflated_megs", w.max_inflated_megs),
        ("workers.sync_session_idle_seconds", w.sync_session_idle_seconds),
        ("workers.max_answers_on_disk", w.max_answers_on_disk),
        ("provision.max_clock_skew_seconds", p.max_clock_skew_seconds),
        ("provision.max_body_bytes", p.max_body_bytes),
        ("portal.session_max_age_seconds", config.portal.session_max_age_seconds),
        ("portal.max_attempts_per_address", config.portal.max_attempts_per_address),
        ("portal.exports_per_day", config.portal.exports_per_day),
        ("portal.max_concurrent_exports", config.portal.max_concurrent_exports),
    ):
        if value <= 0:
            problems.append(f"{name}: must be greater than 0")
    problems += _validate_containment(w)
    if w.max_inflated_megs < 4 * w.max_payload_megs:
        # uploads/budget.py: three quarters of it must hold one body inflated to
        # 3 x max_payload_megs.
        problems.append("workers.max_inflated_megs: at least 4 x workers.max_payload_megs")
    if a.cache_ttl_seconds > MAX_CACHE_TTL:
        problems.append(
            f"auth.cache_ttl_seconds: at most {MAX_CACHE_TTL} (a cached login may outlive a"
            " password change or a disabled user in Cognito by this long)"
        )
    if s.min_body_bytes_per_second < 0:
        problems.append("server.min_body_bytes_per_second: must be 0 (no minimum) or more")
    if s.min_body_average_bytes_per_second < 0:
        problems.append("server.min_body_average_bytes_per_second: must be 0 (no deadline) or more")
    if s.min_free_disk_megs < 0:
        problems.append("server.min_free_disk_megs: must be 0 (no check) or more")
    for i, key in enumerate(p.api_keys):
        if len(key.reveal()) < 16:
            problems.append(f"provision.api_keys[{i}]: too short (at least 16 characters)")
    if config.secret is not None and len(config.secret.reveal()) < 16:
        problems.append("secret: too short (at least 16 characters)")
    key = config.backup.manifest_key
    if key is not None and len(key.reveal()) < 32:
        problems.append("backup.manifest_key: too short (at least 32 characters)")
    if config.logging.format not in {"json", "text"}:
        problems.append('logging.format: must be "json" or "text"')
    if config.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        problems.append("logging.level: must be DEBUG, INFO, WARNING or ERROR")
    return problems


def region_of(config: CognitoConfig) -> str:
    if config.region:
        return config.region
    match = _POOL_ID.match(config.user_pool_id)
    return match.group(1) if match else "us-east-1"


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host in {"localhost", "cognito-local", "moto"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
