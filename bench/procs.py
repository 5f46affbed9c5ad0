"""The processes a benchmark runs: stock sync servers, moto, nginx, and the gateway itself.

Every process is started by `Service`, which logs its output to a file, dies with the benchmark
(PR_SET_PDEATHSIG on Linux, plus an atexit sweep), and stops with SIGINT, then SIGKILL.
Only processes started here are ever signalled, each by its own pid.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Credentials for moto only: real AWS credentials from the environment are never used or sent.
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "bench-stand-in",
    "AWS_SECRET_ACCESS_KEY": "bench-stand-in",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN")

#: Stock-server start commands compared in measure 6 (the first is the gateway's default).
WORKER_COMMANDS: dict[str, list[str]] = {
    "python -c <_rsbridge.syncserver()>": [
        sys.executable,
        "-c",
        "from anki._rsbridge import syncserver; syncserver()",
    ],
    "python -m anki.syncserver": [sys.executable, "-m", "anki.syncserver"],
    "anki-sync-server (official binary)": ["anki-sync-server"],
}
DEFAULT_WORKER = next(iter(WORKER_COMMANDS.values()))

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_live: list[Service] = []


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without AWS credentials or gateway settings, plus moto's dummy ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "SYNC_", "ANKISYNCD_")) and k not in _AWS_UNSET
    }
    env.update(DUMMY_AWS)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def host_key(user: str, password: str) -> str:
    """The stock server's host key for SYNC_USERn=user:password (anki-sync-protocol.md)."""
    return hashlib.sha1(f"{user}:{password}".encode()).hexdigest()  # noqa: S324 - the protocol's


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when its parent dies (no benchmark process outlives it)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_post_json(port: int, path: str, payload: object, timeout: float = 120.0) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = json.dumps(payload).encode()
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path}: {response.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


class Service:
    """One child process with its output in `log`; a context manager that stops it."""

    def __init__(
        self, name: str, command: Sequence[str], *, env: dict[str, str], log: Path, port: int
    ) -> None:
        self.name, self.port, self.log = name, port, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            list(command),
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call
        )
        _live.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, path: str = "/health", timeout: float = 30.0) -> float:
        """Seconds until `GET path` answers 200; raises if the process exits or time runs out."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: see {self.log}"
                )
            try:
                if http_get(self.port, path, timeout=1.0)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout} s: see {self.log}")
            time.sleep(0.02)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        if self in _live:
            _live.remove(self)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for service in list(_live):
        with contextlib.suppress(Exception):
            service.stop(grace=3.0)


# -- stock sync servers ------------------------------------------------------------------


def stock_server(
    users: Sequence[tuple[str, str]],
    base: Path,
    log: Path,
    *,
    command: Sequence[str] = DEFAULT_WORKER,
    wait: bool = True,
    timeout: float = 60.0,
) -> Service:
    """One stock sync server holding `users` (SYNC_USER1..N), as an operator would run it.
    It hashes every password before it answers (about 70 ms each): `timeout` seconds."""
    port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    env = clean_env(SYNC_BASE=str(base), SYNC_HOST="127.0.0.1", SYNC_PORT=str(port))
    env.update({f"SYNC_USER{i}": f"{u}:{p}" for i, (u, p) in enumerate(users, start=1)})
    env.pop("PYTHONPATH")
    service = Service("stock sync server", command, env=env, log=log, port=port)
    if wait:
        service.wait_http(timeout=timeout)
    return service


# -- moto (Cognito stand-in) --------------------------------------------------------------


def moto_server(log: Path) -> Service:
    """moto's server on loopback, in its own process (so it never shares a GIL with the load)."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    service = Service("moto", command, env=clean_env(), log=log, port=port)
    service.wait_http("/moto-api/data.json", timeout=60)
    return service


# -- nginx --------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


NGINX_CONF = """\
# A plain streaming reverse proxy, the usual way to put nginx in front of an HTTP/1.1 app.
# One worker process, like one gateway process; upstream connections kept alive, as the
# gateway's worker link keeps them (until 2026-12-07 this reference opened one per request).
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    client_max_body_size 0;
    upstream worker {{
        server 127.0.0.1:{upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://worker;
            proxy_set_header Connection "";
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def nginx(upstream_port: int, workdir: Path) -> Service:
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=workdir, port=port, upstream=upstream_port))
    service = Service(
        "nginx",
        [binary, "-c", str(conf), "-p", str(workdir)],
        env=clean_env(),
        log=workdir / "nginx.out",
        port=port,
    )
    # nginx has no /health of its own: wait until it accepts connections.
    deadline = time.monotonic() + 15
    while True:
        if service.proc.poll() is not None:
            raise RuntimeError(f"nginx exited: see {workdir}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return service
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"nginx did not start: see {workdir}")
        time.sleep(0.02)


# -- the floor proxy ------------------------------------------------------------------------


def floor(upstream_port: int, log: Path, processes: int = 1) -> Service:
    """bench/floor_proc.py in front of the worker at `upstream_port`: aiohttp and the gateway's
    worker link with none of the gateway's checks, in `processes` processes (its module doc)."""
    port = free_port()
    command = [sys.executable, "-m", "bench.floor_proc", "--port", str(port)]
    command += ["--upstream", str(upstream_port), "--processes", str(processes)]
    service = Service("floor", command, env=clean_env(), log=log, port=port)
    service.wait_http("/health", timeout=30)
    return service


# -- the gateway ---------------------------------------------------------------------------


class Gateway(Service):
    """The gateway in its own process (bench/gateway_proc.py), with a control port for the
    benchmark: Cognito call counts and timings, cache and worker control, prefill.

    `processes`: server.processes (1: one process, as the measures before issue 18 ran it).
    With more, each gateway process has a control port: an action goes to every one (prefill
    to the first) and `stats()` adds theirs up."""

    def __init__(
        self,
        data_dir: Path,
        cognito: dict[str, str],
        log: Path,
        *,
        port: int | None = None,
        processes: int = 1,
        **settings: str,
    ) -> None:
        port = port or free_port()
        self.control_ports = [free_port() for _ in range(processes)]
        self.processes = processes
        env = clean_env(
            GATEWAY_DATA_DIR=str(data_dir),
            GATEWAY_SERVER_HOST="127.0.0.1",
            GATEWAY_SERVER_PORT=str(port),
            GATEWAY_COGNITO_USER_POOL_ID=cognito["pool_id"],
            GATEWAY_COGNITO_CLIENT_ID=cognito["client_id"],
            GATEWAY_COGNITO_REGION=cognito["region"],
            GATEWAY_COGNITO_ENDPOINT_URL=cognito["endpoint"],
            GATEWAY_COGNITO_LOCAL_STAND_IN="true",
            # Workers outlive a benchmark phase; the reaper must not stop them mid-measure.
            GATEWAY_WORKERS_IDLE_TIMEOUT_SECONDS="3600",
            GATEWAY_LOGGING_FORMAT="json",
            GATEWAY_SERVER_PROCESSES=str(processes),
        )
        env.update({f"GATEWAY_{k.upper()}": v for k, v in settings.items()})
        command = [sys.executable, "-m", "bench.gateway_proc"]
        for control in self.control_ports:
            command += ["--control-port", str(control)]
        super().__init__("gateway", command, env=env, log=log, port=port)
        self.wait_http("/health", timeout=60)
        self.data_dir = data_dir
        deadline = time.monotonic() + 60
        for control in self.control_ports:  # /health answered from one process: all up?
            while True:
                try:
                    http_post_json(control, "/stats", {})
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"gateway control port not up: see {log}") from None
                    time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def control(self, action: str, **payload: object) -> Any:
        ports = self.control_ports[:1] if action == "prefill" else self.control_ports
        answers = [http_post_json(port, "/" + action, payload) for port in ports]
        return answers[0]

    def stats(self) -> dict[str, Any]:
        each = [http_post_json(port, "/stats", {}) for port in self.control_ports]
        merged = dict(each[0])
        merged["pids"] = [s["pid"] for s in each]
        for one in each[1:]:
            merged["provider_calls"] += one["provider_calls"]
            merged["authenticate_ms"] = merged["authenticate_ms"] + one["authenticate_ms"]
            merged["cache_entries"] += one["cache_entries"]
            merged["workers"] = {**merged["workers"], **one["workers"]}
            merged["pool"] = {k: v + one["pool"].get(k, 0) for k, v in merged["pool"].items()}
        return merged


# -- memory ----------------------------------------------------------------------------------


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private) of one process in MiB, from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {
        "rss_mib": fields.get("Rss", 0) / 1024,
        "pss_mib": fields.get("Pss", 0) / 1024,
        "uss_mib": private / 1024,
    }


def children_of(pid: int) -> list[int]:
    """Direct children (workers of a gateway), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            # The comm field may hold spaces: the ppid is the 2nd field after the closing paren.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds`, from /proc/stat: how noisy the machine is now."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most `max_wait` s) until the machine is less than `limit` busy; returns the last
    reading. Other people's work on a shared machine lands in every figure taken meanwhile."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        time.sleep(4)
        busy = cpu_busy()
    return busy


def machine() -> dict[str, Any]:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
