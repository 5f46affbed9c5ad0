"""Shared fixtures: moto standing in for Cognito, gateway configs, and a running gateway.

The gateway runs in a background thread with its own event loop (`RunningGateway`), so tests
can drive the real, blocking `anki` client exactly as Anki desktop would. moto's `mock_aws`
patches botocore process-wide, so the gateway's Cognito calls in that thread hit moto too.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from gateway import config as config_mod
from tests.ports import free_port

REGION = "eu-west-1"
#: The backup.manifest_key of the tests' gateways.
MANIFEST_KEY = "test-manifest-key-0123456789abcdef"


def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials: no test may ever reach real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_aws_env(monkeypatch)


@dataclass
class CognitoPool:
    """A moto user pool with an app client that allows the admin password flow."""

    boto: Any
    pool_id: str
    client_id: str
    client_secret: str | None
    email_as_username: bool = False
    subs: dict[str, str] = field(default_factory=dict)

    def add_user(
        self,
        username: str,
        password: str,
        email: str | None = None,
        *,
        email_verified: bool | None = True,
    ) -> str:
        """Create a confirmed user with a permanent password; returns its `sub`.

        `email_verified`: True or False sets that attribute; None leaves it out (never verified).
        """
        attrs = [{"Name": "email", "Value": email}] if email else []
        if email and email_verified is not None:
            attrs.append({"Name": "email_verified", "Value": str(email_verified).lower()})
        created = self.boto.admin_create_user(
            UserPoolId=self.pool_id,
            Username=username,
            UserAttributes=attrs,
            MessageAction="SUPPRESS",
        )
        self.boto.admin_set_user_password(
            UserPoolId=self.pool_id, Username=username, Password=password, Permanent=True
        )
        sub = next(a["Value"] for a in created["User"]["Attributes"] if a["Name"] == "sub")
        self.subs[username] = sub
        return sub

    def disable(self, username: str) -> None:
        self.boto.admin_disable_user(UserPoolId=self.pool_id, Username=username)

    def config(self, data_dir: Path, **sections: dict[str, Any]) -> config_mod.Config:
        """A validated gateway Config for this pool; `sections` override settings per section."""
        env = {
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_COGNITO_USER_POOL_ID": self.pool_id,
            "GATEWAY_COGNITO_CLIENT_ID": self.client_id,
            "GATEWAY_COGNITO_REGION": REGION,
            "GATEWAY_LOGGING_FORMAT": "text",
            # Any free port: several gateways may run at once in one test.
            "GATEWAY_METRICS_PORT": "0",
            "GATEWAY_BACKUP_MANIFEST_KEY": MANIFEST_KEY,
        }
        if self.client_secret:
            env["GATEWAY_COGNITO_CLIENT_SECRET"] = self.client_secret
        config = config_mod.load(None, env)
        for section, values in sections.items():
            config = replace(config, **{section: replace(getattr(config, section), **values)})
        return config


def fake_provider_config(tmp_path: Path, **env: str) -> config_mod.Config:
    """A validated config for an app with a FakeProvider: data under `tmp_path`, `env` on top."""
    return config_mod.load(
        None,
        {
            "GATEWAY_DATA_DIR": str(tmp_path / "data"),
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Test1",
            "GATEWAY_COGNITO_CLIENT_ID": "c",
            **env,
        },
    )


@functools.cache
def _boto_session() -> boto3.session.Session:
    """One boto3 session for every test's pool client: its loader reads the service model once
    (moto drops boto3's default session whenever it starts, so `boto3.client` reads it again).
    moto's stub is a handler of every botocore session, so this one's calls reach moto too."""
    return boto3.session.Session()


def make_pool(*, with_secret: bool = False, email_as_username: bool = False) -> CognitoPool:
    boto = _boto_session().client("cognito-idp", region_name=REGION)
    pool_args: dict[str, Any] = {
        "PoolName": f"pool-{uuid.uuid4().hex[:6]}",
        # As operators are told to create pools; moto compares case-sensitively regardless.
        "UsernameConfiguration": {"CaseSensitive": False},
    }
    if email_as_username:
        pool_args["UsernameAttributes"] = ["email"]
    pool_id = boto.create_user_pool(**pool_args)["UserPool"]["Id"]
    client = boto.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="gateway",
        GenerateSecret=with_secret,
        ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        ReadAttributes=["email", "email_verified"],
    )["UserPoolClient"]
    return CognitoPool(
        boto=boto,
        pool_id=pool_id,
        client_id=client["ClientId"],
        client_secret=client.get("ClientSecret"),
        email_as_username=email_as_username,
    )


@pytest.fixture
def mock_cognito() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def cognito(mock_cognito: None) -> CognitoPool:
    return make_pool()


@pytest.fixture(scope="module")
def module_cognito() -> Iterator[CognitoPool]:
    """moto as Cognito and one user pool for a whole module, for tests that share gateways
    (`start_module_gateway`); each test keeps to users and sessions of its own."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as monkeypatch:
        fake_aws_env(monkeypatch)
        with mock_aws():
            yield make_pool()


@pytest.fixture
def cognito_email(mock_cognito: None) -> CognitoPool:
    """A pool whose users sign in with their email (Cognito gives them UUID usernames)."""
    return make_pool(email_as_username=True)


class RunningGateway:
    """The gateway app served on a real loopback port from a background thread."""

    def __init__(self, config: config_mod.Config, port: int = 0, **app_kwargs: Any) -> None:
        self.config = config
        self._app_kwargs = app_kwargs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.app: Any = None
        self._runner: Any = None
        self.port = port  # 0: any free one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.config.server.path_prefix}"

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the gateway's loop (e.g. to inspect its state) and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def registry(self) -> Any:
        """The gateway's registry, its coroutines run on the gateway's loop as plain calls."""
        from gateway.appkeys import REGISTRY
        from tests.blocking import BlockingRegistry

        return BlockingRegistry(self.app[REGISTRY], self.call)

    def start(self) -> RunningGateway:
        from aiohttp import web

        from gateway.app import create_app, server_options
        from gateway.web.connections import Runner

        self._thread.start()

        async def boot() -> None:
            self.app = create_app(self.config, **self._app_kwargs)
            self._runner = Runner(self.app, handle_signals=False, **server_options(self.config))
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.call(boot())
        return self

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """`await serve_app(app, **runner_kwargs)` → the port it listens on at 127.0.0.1, served as
    `run_app` serves it (aiohttp's handler_cancellation off unless given), for raw sockets."""
    from aiohttp import web

    from gateway.web.connections import Runner

    runners: list[Any] = []

    async def serve(app: Any, **kwargs: Any) -> int:
        runner = Runner(app, **kwargs)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    yield serve
    for runner in reversed(runners):
        await runner.cleanup()


def _gateways() -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def start(config: config_mod.Config, **kwargs: Any) -> RunningGateway:
        gw = RunningGateway(config, **kwargs).start()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        gw.stop()


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., RunningGateway]]:
    """`start_gateway(config, **create_app_kwargs)` → a RunningGateway, stopped at teardown."""
    yield from _gateways()


@pytest.fixture(scope="module")
def start_module_gateway() -> Iterator[Callable[..., RunningGateway]]:
    """`start_gateway` for a module-scoped fixture: the gateways stop after the module's tests."""
    yield from _gateways()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m moto.server` on loopback in its own process, one for the whole run (it takes
    seconds to start); yields its URL. Reset it before use (tests.test_dynamo_e2e's
    `dynamodb_server` does)."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/moto-api/data.json", timeout=2):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def live_worker_pids(collections_dir: Path) -> list[int]:
    """PIDs of processes whose environment points SYNC_BASE at `collections_dir`."""
    pids = []
    needle = f"SYNC_BASE={collections_dir}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(entry))
    return pids


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The registries the gateway opens from now on (`gateway.resources.open_registry`), as
    `tests.outage.Outage`: set `.down` to make every registry call fail."""
    from tests.outage import Outage

    opened: list[Outage] = []

    def open_outage(config: config_mod.Config) -> Outage:
        opened.append(Outage(config.data_dir / "registry.sqlite3", config.collections_dir))
        return opened[-1]

    monkeypatch.setattr("gateway.resources.open_registry", open_outage)
    return opened
