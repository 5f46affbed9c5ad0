"""The configuration schema: one frozen dataclass per section (`SECTIONS`), the top-level
settings (`_TopLevel`) and `Config`, the whole. Each field's comment is its description (the
reference page is generated from it); `metadata["env"]` names the older variables it also
accepts. Declarations only: loading.py reads them, validation.py checks them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.secret import Secret


def _env(*names: str) -> dict[str, Any]:
    return {"env": names}


@dataclass(frozen=True)
class ServerConfig:
    #: Address to listen on (all interfaces by default).
    host: str = "0.0.0.0"
    #: Port to listen on: plain HTTP/1.1 (1 to 65535); TLS goes in a reverse proxy in front.
    port: int = 8080
    #: Serve under this path: `/anki/` means users type `https://host/anki/` in Anki (requests go to
    #: `/anki/sync/...`). Must start and end with `/`; `/health` and `/ready` also answer at the
    #: root.
    path_prefix: str = "/"
    #: Take the client address (login limiter, per-address limits, logs) from `X-Forwarded-For`, and
    #: the scheme from `X-Forwarded-Proto`. Turn on only behind a reverse proxy that overwrites
    #: them; otherwise clients can pick their own address.
    trust_forwarded_for: bool = False
    #: `GET /ready` answers 503 ("low disk space") while the data folder's file system has less than
    #: this many MiB free: logins write the registry and uploads the collections, and both fail on a
    #: full disk; a backup does not copy an account whose copy would leave less than this. 0: no
    #: check.
    min_free_disk_megs: int = 1024
    #: Seconds a client has to send a request's headers, counted from connecting or from the first
    #: byte of a later request on the same connection; then the connection is closed without an
    #: answer.
    header_timeout_seconds: float = 30.0
    #: Seconds an idle keep-alive connection stays open between requests. Keep it above the idle
    #: time of every proxy in front (an ALB's 60 s, Caddy's upstream `keepalive`, nginx's upstream
    #: `keepalive_timeout`), or the proxy sends requests into connections the gateway has just
    #: closed and the client gets a 502.
    keepalive_seconds: float = 75.0
    #: A request body that brings no byte for this many seconds gets 408 and its connection closed
    #: (a sync request frees its worker); a client that takes no byte of a proxied answer for this
    #: long is cut off. Anki itself gives up after 60 s without progress.
    body_idle_timeout_seconds: float = 60.0
    #: The same for a body, either way, that moved fewer than this many bytes a second over the
    #: last `body_idle_timeout_seconds` (a sliding window: a trickle never trips the idle timeout,
    #: and an early burst buys no time). 0: no minimum.
    min_body_bytes_per_second: int = 1024
    #: Every body (and proxied answer) must end by `body_idle_timeout_seconds` plus its size
    #: divided by this rate (408 after that): a trickle just above `min_body_bytes_per_second`
    #: ends there instead of running until the size cap. At the defaults a 100 MiB upload has
    #: 1.8 h, a 1 MiB one 2 min. 0: no deadline.
    min_body_average_bytes_per_second: int = 16384
    #: Requests in flight at once from one client address; beyond it 429 (`Retry-After: 1`) and the
    #: connection is closed. Idle connections close after `server.keepalive_seconds`, so this
    #: bounds connections too. Every device behind one NAT address counts together.
    max_requests_per_address: int = 32
    #: Gateway processes serving the port together (0: one per CPU core this process may use,
    #: fewer under a CPU quota on its cgroup or a parent (`--cpus`, a Kubernetes CPU limit,
    #: systemd's `CPUQuota=`);
    #: one on a cluster node; 1: a single process, as before). The host-wide bounds
    #: (`workers.max_workers`, the per-address and per-user limits) are shared out between
    #: them (gateway/processes/).
    processes: int = 0


@dataclass(frozen=True)
class CognitoConfig:
    #: Required. The Cognito user pool, e.g. `eu-west-1_AbCdEfGhI`; its region is taken from it
    #: unless `region` is set.
    user_pool_id: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_USER_POOL_ID"))
    #: Required. The pool's app client; it must allow `ALLOW_ADMIN_USER_PASSWORD_AUTH`.
    client_id: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_CLIENT_ID"))
    #: The app client's secret, if it has one: the gateway then sends `SECRET_HASH` with each login.
    client_secret: Secret | None = field(
        default=None, metadata=_env("ANKISYNCD_COGNITO_CLIENT_SECRET")
    )
    #: The pool's region. Empty: taken from the pool id (`eu-west-1_AbC` is in `eu-west-1`).
    region: str = field(default="", metadata=_env("ANKISYNCD_COGNITO_REGION"))
    #: The admin password flow: `ADMIN_USER_PASSWORD_AUTH`, or its old name `ADMIN_NO_SRP_AUTH` (the
    #: same flow).
    auth_flow: str = "ADMIN_USER_PASSWORD_AUTH"
    #: Local mode only: the address of a Cognito stand-in (moto). Refused unless `local_stand_in` is
    #: true, so production cannot end up on a stand-in by accident.
    endpoint_url: str = ""
    #: Local mode only: allows `endpoint_url`, and only on a loopback address or the
    #: compose-internal names `cognito-local` and `moto`.
    local_stand_in: bool = False
    #: Seconds to connect to Cognito; a login that cannot reach it gets 503, never 403.
    connect_timeout: float = 3.0
    #: Seconds to wait for Cognito's answer (then 503).
    read_timeout: float = 5.0
    #: Cognito calls in flight at once: threads and HTTP connections (boto3 blocks, so each call
    #: runs on a thread).
    max_concurrency: int = 16


#: Longest allowed credential-cache lifetime, in seconds.
MAX_CACHE_TTL = 300
#: Longest allowed registry-cache lifetime (`registry.cache_seconds`), in seconds.
MAX_REGISTRY_CACHE = 60


@dataclass(frozen=True)
class AuthConfig:
    #: Seconds a successful login is remembered (failures never are); also the longest a cached
    #: login can outlive a change in Cognito (a new password, a disabled or re-created user). At
    #: most 300.
    cache_ttl_seconds: int = 60
    #: At most this many remembered logins.
    cache_max_entries: int = 100_000
    #: Failed logins per user within `failure_window_seconds` before 429; every spelling of the
    #: username (case, spaces, full-width letters) counts towards one budget, from any address.
    max_failures_per_user: int = 10
    #: Failed logins per client address within the window before 429. Counted apart, the same limit
    #: holds for sync requests with unknown host keys (each costs a registry read): past it, that
    #: address's unknown keys get 429 without a lookup, while keys this gateway process already
    #: knows keep syncing.
    max_failures_per_address: int = 50
    #: The window, in seconds, for both failure counts.
    failure_window_seconds: int = 900
    #: How often a host key's owner is re-checked in Cognito, by `sub`, on any sync request (in the
    #: background; waited for when more than twice this old): users disabled or deleted there lose
    #: sync access within this time plus one Cognito round trip.
    recheck_seconds: int = 900
    #: Cognito calls a second that re-checks may make together (each gateway process gets its
    #: share). A re-check over the budget is postponed, never a logout; one pool serves about
    #: `recheck_calls_per_second * recheck_seconds` accounts active within each interval
    #: (50 x 900 = 45,000 with the defaults).
    recheck_calls_per_second: float = 50.0


@dataclass(frozen=True)
class WorkersConfig:
    #: Command that starts one stock sync server, e.g. `/usr/local/bin/anki-sync-server`. Empty: the
    #: pinned `anki` package's server in this Python. A list in YAML, shell words in the
    #: environment. It is configured through `SYNC_USER1`, `SYNC_BASE`, `SYNC_HOST` and `SYNC_PORT`
    #: in its environment.
    command: tuple[str, ...] = ()
    #: Sync servers running at once (one per active account); idle ones are stopped first to make
    #: room.
    max_workers: int = 50
    #: Seconds without a request before an account's sync server stops.
    idle_timeout_seconds: int = 300
    #: Seconds a sync server has to answer its health check after starting (else 504).
    start_timeout_seconds: float = 15.0
    #: Seconds a request waits for a worker slot when all are busy (else 503 with `Retry-After`).
    queue_timeout_seconds: float = 10.0
    #: Largest sync request body in MiB as sent (compressed), counted by the gateway; also the sync
    #: server's `MAX_SYNC_PAYLOAD_MEGS`. A body may inflate to less than three times this (the sync
    #: server's own cap), and to at most 16 MiB plus 20 times its compressed size (zstd bombs). An
    #: upload over a limit gets the sync server's own answer (Anki shows "collection exceeds size
    #: limit"), other methods 413.
    max_payload_megs: int = 100
    #: MiB that the request bodies in flight to all sync servers may inflate to together (each
    #: server holds a body inflated in memory while it works on it). Bodies inflating past 16 MiB
    #: each take one of `3/4 x this / (3 x max_payload_megs)` places (2 by default), smaller ones
    #: share the rest; one account, and one client address, holds at most one place and 16 MiB of
    #: the rest at a time; a body that finds no room gets 503 ("try again in a few minutes"). Two
    #: bodies per account that inflate to at most 4 MiB each (normal syncs: a stock media zip
    #: aims at 2.5 MiB) take nothing from it and are never refused for room: add
    #: `max_workers` x 8 MiB when sizing memory (400 MiB at 50 workers). At least
    #: 4 x `workers.max_payload_megs`; keep it below the memory the sync servers may use.
    max_inflated_megs: int = 1024
    #: Seconds a collection sync may go without a request before another device of the account
    #: may start one, counted from the end of its last request (a request in flight holds the
    #: sync however long it takes). One sync per account at a time: an abandoned sync, say a
    #: phone that lost its network, holds the account at most this long (and at least this
    #: long less a tenth of it, at most 5 s: the lease is renewed in such steps). Anki's own
    #: stall timer is 60 s; the stock server alone never expires a sync.
    sync_session_idle_seconds: float = 60.0
    #: Answers that may wait on the data disk at once for clients reading them slowly (a big
    #: `sync/download` read at the client's pace while its sync server is already let go), over
    #: all accounts, one per account; past them, such an answer keeps its sync server until its
    #: client catches up. Bounds that disk use to this many collections' worth.
    max_answers_on_disk: int = 8
    #: How each sync server is boxed (docs/security/containment.md): `auto` (cgroup v2 where the
    #: gateway can create cgroups, else per-process limits), `cgroup` (refuse to start without
    #: cgroups) or `rlimit` (per-process limits only). The start-up line "worker containment" and
    #: the metric `gateway_worker_containment` say which mode is in force.
    containment: str = "auto"
    #: The cgroup v2 directory to put workers under. Empty: the gateway's own cgroup.
    cgroup_dir: str = ""
    #: MiB of memory one sync server may use (cgroup `memory.max`, or `RLIMIT_DATA`): past it that
    #: server alone is killed and its request gets 503 with `Retry-After`. Measured: an honest
    #: 280 MB collection's full upload (the stock server's cap is 3 x `max_payload_megs`
    #: inflated) peaks at 373 MiB resident, 573 MiB of private memory; keep at least 6 x
    #: `workers.max_payload_megs`. At least 64.
    max_memory_megs: int = 1024
    #: Processes and threads one sync server may have (cgroup `pids.max`; in rlimit mode the memory
    #: limit bounds them). The stock server runs 3.
    max_pids: int = 64
    #: One sync server's CPU weight among the others (cgroup `cpu.weight`, 1 to 10000); all of them
    #: together weigh as much as the gateway, which so keeps at least half the CPU.
    cpu_weight: int = 100
    #: The sync servers' nice value in rlimit mode (0 to 19), so busy servers yield to the
    #: gateway.
    nice: int = 5


@dataclass(frozen=True)
class QuotaConfig:
    #: Largest collection a full upload (sync/upload) may send, compressed, in MB (1,000,000
    #: bytes); 0: unlimited. AnkiWeb's figure: 100.
    collection_upload_megs: int = 100
    #: Largest collection uncompressed, in MB: a full upload inflated, and the collection on
    #: the server's disk before a normal sync; 0: unlimited. AnkiWeb's figure: 250.
    collection_megs: int = 250
    #: All of an account's media files together, in MB; 0: unlimited. AnkiWeb publishes no
    #: such figure: this default is the gateway's own.
    media_megs: int = 1000
    #: Largest single media file, in MB; 0: unlimited. AnkiWeb's figure: 100.
    media_file_megs: int = 100


@dataclass(frozen=True)
class ProvisionConfig:
    #: Accepted `X-API-Key` values for `POST /provision-user` (two during a rotation), each at least
    #: 16 characters. None: the route is off (404). Comma-separated in the environment.
    api_keys: tuple[Secret, ...] = field(
        default=(),
        metadata=_env(
            "GATEWAY_PROVISION_API_KEY", "ANKISYNCD_PROVISION_API_KEY", "SYNC_SERVER_API_KEY"
        ),
    )
    #: If set, provisioning requests must also carry a valid HMAC-SHA256 signature header.
    signing_secret: Secret | None = None
    #: Allowed clock difference, in seconds, for signed provisioning requests.
    max_clock_skew_seconds: int = 300
    #: Largest provisioning request body, in bytes.
    max_body_bytes: int = 16_384


@dataclass(frozen=True)
class PortalConfig:
    #: Serve the account portal (sign-up, confirmation, password reset, Anki set-up, sign out all
    #: devices, delete) at `<server.path_prefix>account/`, or at the root of `host`. Local mode
    #: turns it on.
    enabled: bool = False
    #: A host name of the portal's own, e.g. `signup.example.com`: requests whose Host is it get
    #: the portal at `/` (its session cookie is scoped to that host), and the sync host's
    #: `account/` pages send people there. Needs `public_url` (the sync URL the set-up page
    #: shows). Empty: the portal is under the sync host's `<server.path_prefix>account/`.
    host: str = ""
    #: The URL users type into Anki, shown on the set-up page, e.g. `https://sync.example.com/`
    #: (with the path prefix; an http(s) URL ending in `/`). Empty: taken from each request (scheme,
    #: Host and path prefix).
    public_url: str = ""
    #: Shown in page titles and headings (1 to 80 characters).
    service_name: str = "Anki sync"
    #: What "delete my account" does to the Cognito user: `delete` (the person may sign up again
    #: later), `disable` (they can never sign in or sign up again with that email) or `keep` (they
    #: can still sign in; their next login creates a new, empty account).
    delete_cognito_user: str = "delete"
    #: A signed-in portal session ends after this many seconds.
    session_max_age_seconds: int = 3600
    #: Sign-up, confirmation, resend and reset attempts per client address (and per email) within 15
    #: minutes.
    max_attempts_per_address: int = 20
    #: "Download my data": exports (.colpkg with media) one account may start in 24 hours.
    exports_per_day: int = 3
    #: Exports this gateway process builds at once (each copies and compresses a whole
    #: collection); more are told to try again shortly.
    max_concurrent_exports: int = 2


@dataclass(frozen=True)
class MetricsConfig:
    #: Serve Prometheus metrics (`GET /metrics`) on a listener of their own.
    enabled: bool = True
    #: Address of the metrics listener: loopback by default, so never public unless chosen.
    host: str = "127.0.0.1"
    #: Port of the metrics listener (0 to 65535; 0 picks a free port).
    port: int = 9464
    #: If set, `<path_prefix>metrics` is also served on the main port to requests with
    #: `Authorization: Bearer <token>`. At least 16 characters.
    bearer_token: Secret | None = None


@dataclass(frozen=True)
class ClusterConfig:
    """Several gateway nodes sharing accounts (gateway/cluster/). Off unless `node_id` is set."""

    #: This node's id among several gateway nodes (1 to 40 letters, digits, `-` or `_`). Empty: one
    #: gateway, nothing of the cluster runs. Needs `secret` set, the same on every node.
    node_id: str = ""
    #: Where the other nodes reach this one, with the path prefix, e.g. `http://10.0.1.7:8080/`.
    #: Required with `node_id`.
    internal_url: str = ""
    #: Where clients can reach this node directly, e.g. `https://sync-2.example.com/`. If set,
    #: `sync/meta` for this node's accounts reaching another node is answered with a 308 to it, and
    #: the client keeps that URL. Empty: other nodes forward instead.
    public_url: str = ""
    #: `local`: each node keeps its accounts on its own disk (owner down: 503 for its accounts);
    #: `shared`: every node mounts one collections folder (EFS), and a dead node's accounts are
    #: taken over after `lease_seconds`.
    storage: str = "local"
    #: A node's heartbeat, and so the ownership leases of its accounts, last this many seconds
    #: without renewal: in `shared` storage a dead node's accounts move to another node this long
    #: after its last heartbeat.
    lease_seconds: float = 30.0
    #: How often a node renews its heartbeat (and learns of other nodes): above 0 and at most half
    #: of `lease_seconds`.
    heartbeat_seconds: float = 5.0
    #: Node-to-node requests carry a signed time; one further off than this many seconds is refused
    #: (the replay window). Keep node clocks in sync (NTP, as on EC2 and ECS).
    max_clock_skew_seconds: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.node_id)


@dataclass(frozen=True)
class RegistryConfig:
    """Where accounts and host keys are kept (gateway/registry/)."""

    #: Where accounts and host keys are kept: `sqlite` (`<data_dir>/registry.sqlite3`, one host, no
    #: AWS) or `dynamodb` (one table shared by every gateway node).
    backend: str = "sqlite"
    #: The DynamoDB table (partition key `pk`, a string; made by `deploy/dynamodb.yaml` or `python
    #: -m gateway accounts create-table`): 3 to 255 letters, digits, `_`, `-` or `.`.
    table: str = "anki-gateway"
    #: The table's region. Empty: the user pool's.
    region: str = ""
    #: Another DynamoDB endpoint (DynamoDB Local, a moto server), e.g. `http://127.0.0.1:5000`.
    #: Empty: AWS's own.
    endpoint_url: str = ""
    #: How long a node trusts an account row it read, in seconds: a sign-out, disable or deletion
    #: made through another node (or the command line) takes effect on this node within this time.
    #: At most 60.
    cache_seconds: float = 5.0
    #: While DynamoDB is throttled or unreachable, a device whose key this node answered in the last
    #: this-many seconds keeps syncing from the node's memory; everything else gets 503. 0: never.
    stale_seconds: float = 900.0
    #: Seconds to connect to DynamoDB (botocore's standard retries: 3 tries in all, then 503).
    connect_timeout: float = 2.0
    #: Seconds to wait for DynamoDB's answer.
    read_timeout: float = 3.0
    #: DynamoDB calls in flight at once: threads and HTTP connections (boto3 blocks).
    max_concurrency: int = 16


REGISTRY_BACKENDS = {"sqlite", "dynamodb"}


@dataclass(frozen=True)
class BackupConfig:
    """Backups and restores (gateway/backup/)."""

    #: Authenticates every snapshot's manifest (HMAC-SHA256 over each file's SHA-256): a
    #: restore refuses a snapshot it does not verify. Keep it away from the backup store and
    #: with the other secrets (a restore on a new machine needs it). Required to back up,
    #: restore and verify. At least 32 characters.
    manifest_key: Secret | None = None


@dataclass(frozen=True)
class LoggingConfig:
    #: `DEBUG`, `INFO`, `WARNING` or `ERROR`. No level logs a password, key or secret.
    level: str = "INFO"
    #: `json` (one object a line) or `text` (for people).
    format: str = "json"


@dataclass(frozen=True)
class Config:
    #: The gateway's state: `registry.sqlite3`, `gateway.secret` and `collections/<account>/`.
    #: Relative paths count from the working directory; the Docker image sets `/data`.
    data_dir: Path = Path("data")
    #: Derives every account's sync-server password, and so every host key the gateway hands out.
    #: Empty: generated once into `<data_dir>/gateway.secret` (mode 0600). Changing or losing it
    #: logs every Anki client out (each must log in again). At least 16 characters; required, the
    #: same on every node, with `cluster.node_id`.
    secret: Secret | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    cognito: CognitoConfig = field(default_factory=CognitoConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    provision: ProvisionConfig = field(default_factory=ProvisionConfig)
    portal: PortalConfig = field(default_factory=PortalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)

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
    "quota": QuotaConfig,
    "provision": ProvisionConfig,
    "portal": PortalConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
    "cluster": ClusterConfig,
    "registry": RegistryConfig,
    "backup": BackupConfig,
}


@dataclass(frozen=True)
class _TopLevel:
    data_dir: Path = Path("data")
    secret: Secret | None = None
