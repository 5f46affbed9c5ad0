"""A gateway holding only the provisioning route, on a real loopback port, from a thread.

What the app in gateway/app.py does for this route: set CONFIG, REGISTRY and PROVIDER, call
`add_routes(app)`. Its loop runs in a background thread, so tests (and the Lambda handler, which
blocks) talk to it over real HTTP, and a "first login" can run `registry.ensure()` on the same
loop thread, exactly where the real login runs it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.appkeys import CONFIG, PROVIDER, REGISTRY
from gateway.config import Config
from gateway.identity.provider import IdentityProvider
from gateway.provision.handler import add_routes
from gateway.registry import SqliteRegistry
from tests.blocking import BlockingRegistry

KEY = "k" * 20
NEW_KEY = "n" * 24


class ProvisionServer:
    def __init__(self, config: Config, provider: IdentityProvider) -> None:
        self.config = config
        self.provider = provider
        self.app = web.Application()
        self.app[CONFIG] = config
        self.app[REGISTRY] = SqliteRegistry(
            config.data_dir / "registry.sqlite3", config.collections_dir
        )
        self.app[PROVIDER] = provider
        add_routes(self.app)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: The registry's coroutines as plain calls, run on the server's loop.
        self.registry = BlockingRegistry(self.app[REGISTRY], self.call)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}{self.config.server.path_prefix}provision-user"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ProvisionServer:
        self._thread.start()

        async def boot() -> None:
            self._runner = web.AppRunner(self.app, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.call(boot())
        return self

    def stop(self) -> None:
        if self.loop.is_closed():
            return  # stopped already (a test restarting the gateway)
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self.call(self.provider.close())
            self._runner = None
        self.registry.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def folders(self) -> list[str]:
        return sorted(p.name for p in self.config.collections_dir.iterdir())

    def assert_untouched(self) -> None:
        assert self.registry.count() == 0
        assert self.folders() == []


@dataclass
class Answer:
    status: int
    body: Any
    headers: Message

    @property
    def error(self) -> str:
        return self.body["error"]


def post(
    url: str,
    payload: Any = None,
    *,
    raw: bytes | None = None,
    key: str | None = KEY,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    conn: http.client.HTTPConnection | None = None,
) -> Answer:
    """POST `payload` as JSON (or `raw` bytes) with the given key; never retries. On a fresh
    connection, closed after the answer, unless `conn` (kept open: keep-alive) is given."""
    parts = urlsplit(url)
    body = raw if raw is not None else json.dumps(payload).encode()
    sent = dict(headers or {})
    if key is not None:
        sent["X-API-Key"] = key
    if content_type is not None:
        sent["Content-Type"] = content_type
    own = conn is None
    if conn is None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if chunked:
            conn.request("POST", parts.path, body=iter([body]), headers=sent, encode_chunked=True)
        else:
            conn.request("POST", parts.path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        try:
            decoded = json.loads(data)
        except ValueError:
            decoded = data.decode(errors="replace")
        return Answer(response.status, decoded, response.headers)
    finally:
        if own:
            conn.close()


def lambda_body(username: str, sub: str, email: str | None) -> dict[str, Any]:
    """The body the PostConfirmation Lambdas send."""
    attributes: dict[str, Any] = {"sub": sub, "email_verified": "true"}
    if email:
        attributes["email"] = email
    return {
        "username": username,
        "email": email,
        "cognito_user_id": sub,
        "user_attributes": attributes,
    }
