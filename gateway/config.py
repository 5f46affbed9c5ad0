"""Configuration: frozen, typed dataclasses loaded from YAML with environment overrides.

Precedence, lowest first: the defaults below, `config/gateway.yaml` (or `--config`), then the
environment. Every setting `section.key` has the variable `GATEWAY_SECTION_KEY` (top-level
settings: `GATEWAY_KEY`); some also accept the names earlier deployments used
(`ANKISYNCD_COGNITO_*`, `SYNC_SERVER_API_KEY`). A secret may instead come from a file:
`key_file:` in YAML or `<VARIABLE>_FILE` in the environment.

`load()` collects every problem (unknown keys, wrong types, missing values, contradictions)
and raises one `ConfigError` listing them all; it never stops at the first.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit

import yaml


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _env(*names: str) -> dict[str, Any]:
    return {"env": names}


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    #: Serve under this path ("/anki/" → https://host/anki/sync/...). Always starts and ends in "/".
    path_prefix: str = "/"
    #: Trust X-Forwarded-For from the reverse proxy for the client address (login limiter, logs).
    trust_forwarded_for: bool = False
    #: `/ready` answers 503 while the data folder's file system has less than this many MiB
    #: free (0: no check). Logins write the registry and uploads the collections.
    min_free_disk_megs: int = 1024
    #: Seconds a client has to send a request's headers, from connecting or from the end of its
    #: previous request; also how long an idle keep-alive connection stays open.
    header_timeout_seconds: float = 30.0
    #: A request body that brings no byte for this long is abandoned (408, connection closed),
    #: and so is one that brings fewer than `min_body_bytes_per_second` times this many bytes in
    #: any such window (web/pace.py); the same rules cut off a client that does not read a proxied
    #: answer. Anki gives up after 60 s without progress itself.
    body_idle_timeout_seconds: float = 60.0
    min_body_bytes_per_second: int = 1024
    #: Requests in flight at once from one client address (429 beyond).
    max_requests_per_address: int = 32
    #: Gateway processes serving the port together (0: one per CPU core this process may use,
    #: one on a cluster node; 1: a single process, as before). The host-wide bounds
    #: (`workers.max_workers`, the per-address and per-user limits) are shared out between
    #: them (gateway/processes/).
    processes: int = 0


@dataclass(frozen=True)
class CognitoConfig:
    user_pool_id: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_USER_POOL_ID"))
    client_id: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_CLIENT_ID"))
    client_secret: Secret | None = field(
        default=None, metadata=_env("ANKISYNCD_COGNITO_CLIENT_SECRET")
    )
    #: Defaults to the region in the pool id ("eu-west-1_AbC" → "eu-west-1").
    region: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_REGION"))
    auth_flow: str = "ADMIN_USER_PASSWORD_AUTH"
    #: Only for a local stand-in (moto); refused unless `local_stand_in` is true.
    endpoint_url: str = ""
    local_stand_in: bool = False
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    #: Threads (and HTTP connections) for Cognito calls; boto3 blocks.
    max_concurrency: int = 16


#: Longest allowed credential-cache lifetime, in seconds.
MAX_CACHE_TTL = 300
#: Longest allowed registry-cache lifetime (`registry.cache_seconds`), in seconds.
MAX_REGISTRY_CACHE = 60


@dataclass(frozen=True)
class AuthConfig:
    #: How long a successful login is remembered (success only); also the longest a cached login
    #: can outlive a change in Cognito (a new password, a disabled or re-created user).
    cache_ttl_seconds: int = 60
    cache_max_entries: int = 100_000
    #: Failed logins allowed per username, and per client address, within the window → 429.
    max_failures_per_user: int = 10
    max_failures_per_address: int = 50
    failure_window_seconds: int = 900
    #: How often a host key's owner is re-checked in Cognito (by sub, on any request; in the
    #: background, or waited for when overdue): users disabled or deleted there lose sync
    #: access within this time plus one Cognito round trip.
    recheck_seconds: int = 900
    #: Cognito calls a second that re-checks may make together (each gateway process gets its
    #: share). A re-check over the budget is postponed, never a logout; one pool serves about
    #: `recheck_calls_per_second * recheck_seconds` accounts active within each interval
    #: (50 x 900 = 45,000 with the defaults).
    recheck_calls_per_second: float = 50.0


@dataclass(frozen=True)
class WorkersConfig:
    #: Command that starts one stock sync server. Empty: the `anki` package's server in this
    #: Python. Configured via SYNC_USER1/SYNC_BASE/SYNC_HOST/SYNC_PORT in its environment.
    command: tuple[str, ...] = ()
    max_workers: int = 50
    idle_timeout_seconds: int = 300
    start_timeout_seconds: float = 15.0
    #: How long a request waits for a worker slot when all are busy before 503.
    queue_timeout_seconds: float = 10.0
    #: Largest request body in MiB as sent (compressed), counted by the gateway; also passed to
    #: the worker as MAX_SYNC_PAYLOAD_MEGS (uploads/payload.py).
    max_payload_megs: int = 100
    #: MiB that the request bodies in flight to all workers may inflate to together (each
    #: worker holds a body inflated in memory); beyond it 503 (uploads/payload.py).
    max_inflated_megs: int = 1024


@dataclass(frozen=True)
class ProvisionConfig:
    #: Accepted X-API-Key values (two during a rotation). None configured: the route is off (404).
    api_keys: tuple[Secret, ...] = field(
        default=(),
        metadata=_env(
            "GATEWAY_PROVISION_API_KEY", "ANKISYNCD_PROVISION_API_KEY", "SYNC_SERVER_API_KEY"
        ),
    )
    #: If set, requests must also carry a valid HMAC-SHA256 signature header.
    signing_secret: Secret | None = None
    max_clock_skew_seconds: int = 300
    max_body_bytes: int = 16_384


@dataclass(frozen=True)
class PortalConfig:
    #: Serve the account portal (sign-up, confirm, reset, set-up, sign out devices, delete) at
    #: <server.path_prefix>account/.
    enabled: bool = False
    #: The URL users type into Anki, e.g. https://sync.example.com/ (with the path prefix).
    #: Empty: taken from each request (scheme, Host and path prefix).
    public_url: str = ""
    #: Shown in page titles and headings.
    service_name: str = "Anki sync"
    #: What "delete my account" does to the Cognito user: delete (default), disable or keep.
    delete_cognito_user: str = "delete"
    #: Signed-in sessions end after this many seconds.
    session_max_age_seconds: int = 3600
    #: Sign-up, confirmation, resend and reset attempts per client address within 15 minutes.
    max_attempts_per_address: int = 20


@dataclass(frozen=True)
class MetricsConfig:
    #: Serve Prometheus metrics (GET /metrics) on their own listener.
    enabled: bool = True
    #: Address of that listener: loopback by default, never public unless chosen.
    host: str = "127.0.0.1"
    #: Its port; 0 picks a free one (tests).
    port: int = 9464
    #: If set, GET <path_prefix>metrics on the main port too, with `Authorization: Bearer <it>`.
    bearer_token: Secret | None = None


@dataclass(frozen=True)
class ClusterConfig:
    """Several gateway nodes sharing accounts (gateway/cluster/). Off unless `node_id` is set."""

    #: This node's id in the directory (letters, digits, "-", "_"; at most 40). Empty: one node.
    node_id: str = ""
    #: Where other nodes reach this one, e.g. http://10.0.1.7:8080/ (with the path prefix).
    internal_url: str = ""
    #: Where clients may reach this node directly (308 from sync/meta); empty: forward instead.
    public_url: str = ""
    #: "local": each node keeps its accounts on its own disk (owner down: 503 for its
    #: accounts); "shared": one collections folder for all (a dead node's accounts are taken
    #: over after `lease_seconds`).
    storage: str = "local"
    #: A node's heartbeat, and so its ownership leases, last this long without renewal.
    lease_seconds: float = 30.0
    #: How often a node renews its heartbeat (well below `lease_seconds`).
    heartbeat_seconds: float = 5.0
    #: Largest clock difference between nodes a node-to-node request may show, in seconds.
    max_clock_skew_seconds: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.node_id)


@dataclass(frozen=True)
class RegistryConfig:
    """Where accounts and host keys are kept (gateway/registry/)."""

    #: "sqlite": `<data_dir>/registry.sqlite3`, one host, no AWS (the default). "dynamodb": one
    #: DynamoDB table shared by every gateway node.
    backend: str = "sqlite"
    #: The DynamoDB table (partition key `pk`, String; `registry.dynamo.create_table`).
    table: str = "anki-gateway"
    #: The table's region; defaults to the user pool's.
    region: str = ""
    #: Another DynamoDB endpoint (DynamoDB Local, moto); empty: AWS's own.
    endpoint_url: str = ""
    #: How long this node trusts an account it read, in seconds: a sign-out, disable or
    #: deletion made through another node takes effect here within this time.
    cache_seconds: float = 5.0
    #: While DynamoDB is unreachable or throttled, devices with a key this node answered in the
    #: last this-many seconds keep syncing from its memory (stale-if-error); 0: never.
    stale_seconds: float = 900.0
    connect_timeout: float = 2.0
    read_timeout: float = 3.0
    #: Threads (and HTTP connections) for DynamoDB calls; boto3 blocks.
    max_concurrency: int = 16


REGISTRY_BACKENDS = {"sqlite", "dynamodb"}


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    #: "json" (one object a line) or "text".
    format: str = "json"


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    #: Derives each account's sync-server password. Empty: generated once into
    #: <data_dir>/gateway.secret. Changing it invalidates every issued host key.
    secret: Secret | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    cognito: CognitoConfig = field(default_factory=CognitoConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    provision: ProvisionConfig = field(default_factory=ProvisionConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    def worker_command(self) -> tuple[str, ...]:
        # `_rsbridge.syncserver()` is the same server as `python -m anki.syncserver` without the
        # GUI-side imports: measured 24 MB RSS idle instead of 43 MB (anki-sync-protocol.md).
        return self.workers.command or (
            sys.executable,
            "-c",
            "from anki._rsbridge import syncserver; syncserver()",
        )


SECTIONS = {
    "server": ServerConfig,
    "cognito": CognitoConfig,
    "auth": AuthConfig,
    "workers": WorkersConfig,
    "provision": ProvisionConfig,
    "portal": PortalConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
    "cluster": ClusterConfig,
    "registry": RegistryConfig,
}
DELETE_ACTIONS = {"delete", "disable", "keep"}
AUTH_FLOWS = {"ADMIN_USER_PASSWORD_AUTH", "ADMIN_NO_SRP_AUTH"}
_POOL_ID = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d)_[0-9A-Za-z]+$")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def env_names(section: str | None, name: str, meta: Mapping[str, Any]) -> tuple[str, ...]:
    primary = "GATEWAY_" + (f"{section}_{name}" if section else name).upper()
    return (primary, *meta.get("env", ()))


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (may be None or missing only if it is None), apply `environ`, validate."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([f"{path}: {exc}"]) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        raw = loaded
    top: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section_raw = raw.get(name) or {}
        if not isinstance(section_raw, dict):
            problems.append(f"{name}: must be a mapping")
            section_raw = {}
        top[name] = _build(cls, name, section_raw, environ, problems)
    top_raw = {k: v for k, v in raw.items() if k not in SECTIONS}
    flat = _build(_TopLevel, None, top_raw, environ, problems)
    config = Config(data_dir=flat.data_dir, secret=flat.secret, **top)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


@dataclass(frozen=True)
class _TopLevel:
    data_dir: Path = Path("data")
    secret: Secret | None = None


def _build(cls: type, section: str | None, raw: dict[str, Any], environ, problems) -> Any:
    where = f"{section}." if section else ""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    secrets = {n for n in known if _is_secret(hints[n])}
    for key in raw:
        base = key.removesuffix("_file")
        if key not in known and not (key.endswith("_file") and base in secrets):
            problems.append(f"{where}{key}: unknown setting")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        names = env_names(section, f.name, f.metadata)
        value, origin = _lookup(f.name, raw, names, environ, f.name in secrets, problems, where)
        if value is None:
            continue
        try:
            values[f.name] = _coerce(hints[f.name], value)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}{f.name} (from {origin}): {exc}")
    return cls(**values)


def _lookup(name, raw, names, environ, secret, problems, where):
    for env in names:
        # An empty variable counts as unset, so `GATEWAY_X=` in a .env file does not hide the
        # legacy name or the YAML value behind it.
        if environ.get(env):
            return environ[env], env
        if secret and environ.get(env + "_FILE"):
            return _read_secret_file(environ[env + "_FILE"], env + "_FILE", problems), env
    if secret and raw.get(name + "_file"):
        return _read_secret_file(raw[name + "_file"], f"{where}{name}_file", problems), "file"
    if name in raw:
        return raw[name], f"{where}{name}"
    return None, ""


def _read_secret_file(path: str, origin: str, problems: list[str]) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{origin}: cannot read secret file {path}: {exc.strerror}")
        return None


def _is_secret(hint: Any) -> bool:
    return hint is Secret or Secret in get_args(hint) or _tuple_of(hint) is Secret


def _tuple_of(hint: Any) -> Any:
    args = get_args(hint)
    return args[0] if len(args) == 2 and args[1] is Ellipsis else None


def _coerce(hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ValueError(f"expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a path")
        return Path(value)
    if hint == Secret | None:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return Secret(value) if value else None
    item = _tuple_of(hint)
    if item is not None:
        if isinstance(value, str):
            # Keys: comma-separated; commands: shell words.
            parts = [p.strip() for p in value.split(",")] if item is Secret else shlex.split(value)
        elif isinstance(value, list):
            parts = value
        else:
            raise ValueError("expected a list")
        if not all(isinstance(p, str) for p in parts):
            raise ValueError("expected a list of strings")
        return tuple(Secret(p) if item is Secret else p for p in parts if p)
    raise TypeError(f"unsupported setting type {hint}")


def _validate_portal(portal: PortalConfig) -> list[str]:
    problems = []
    if portal.delete_cognito_user not in DELETE_ACTIONS:
        problems.append("portal.delete_cognito_user: one of " + ", ".join(sorted(DELETE_ACTIONS)))
    url = portal.public_url
    if url and (not re.match(r"^https?://[^/\s]+/(\S*/)?$", url)):
        problems.append(
            "portal.public_url: an http(s) URL ending in '/', e.g. https://sync.example.com/"
        )
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


def validate(config: Config) -> list[str]:
    """Cross-field checks; pure. Returns every problem found."""
    problems: list[str] = _validate_cluster(config.cluster)
    if config.cluster.enabled and config.secret is None:
        problems.append(
            "secret: required with cluster.node_id (every node derives keys and signs "
            "node-to-node requests with the same secret)"
        )
    c, s, a, w, p = config.cognito, config.server, config.auth, config.workers, config.provision
    if not c.user_pool_id:
        problems.append("cognito.user_pool_id: required (GATEWAY_COGNITO_USER_POOL_ID)")
    elif not _POOL_ID.match(c.user_pool_id):
        problems.append(f"cognito.user_pool_id: {c.user_pool_id!r} is not a user pool id")
    if not c.client_id:
        problems.append("cognito.client_id: required (GATEWAY_COGNITO_CLIENT_ID)")
    problems += _validate_portal(config.portal)
    problems += _validate_registry(config.registry)
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
        ("server.body_idle_timeout_seconds", s.body_idle_timeout_seconds),
        ("server.max_requests_per_address", s.max_requests_per_address),
        ("workers.max_workers", w.max_workers),
        ("workers.idle_timeout_seconds", w.idle_timeout_seconds),
        ("workers.start_timeout_seconds", w.start_timeout_seconds),
        ("workers.queue_timeout_seconds", w.queue_timeout_seconds),
        ("workers.max_payload_megs", w.max_payload_megs),
        ("workers.max_inflated_megs", w.max_inflated_megs),
        ("provision.max_clock_skew_seconds", p.max_clock_skew_seconds),
        ("provision.max_body_bytes", p.max_body_bytes),
        ("portal.session_max_age_seconds", config.portal.session_max_age_seconds),
        ("portal.max_attempts_per_address", config.portal.max_attempts_per_address),
    ):
        if value <= 0:
            problems.append(f"{name}: must be greater than 0")
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
    if s.min_free_disk_megs < 0:
        problems.append("server.min_free_disk_megs: must be 0 (no check) or more")
    for i, key in enumerate(p.api_keys):
        if len(key.reveal()) < 16:
            problems.append(f"provision.api_keys[{i}]: too short (at least 16 characters)")
    if config.secret is not None and len(config.secret.reveal()) < 16:
        problems.append("secret: too short (at least 16 characters)")
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
