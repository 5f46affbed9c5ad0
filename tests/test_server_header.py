"""Every answer carries one constant `Server` header, never aiohttp's "Python/3.x aiohttp/3.y"
(issue 16, item 6): the app's answers, its error answers, the proxied worker's, aiohttp's own
for a request it cannot parse, and the metrics listener's."""

from __future__ import annotations

import asyncio

import aiohttp
import zstandard

from gateway.app import create_app, server_options
from gateway.identity.fake import FakeProvider
from gateway.ops.metricsserver import METRICS_PORT
from gateway.web.connections import SERVER
from tests.conftest import fake_provider_config
from tests.rawhttp import login, sync_header

PASSWORD = "Pass-Word-0815"


async def raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_every_answer_carries_the_constant_server_header(tmp_path, serve_app):
    config = fake_provider_config(tmp_path, GATEWAY_METRICS_PORT="0")
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD)
    app = create_app(config, provider=provider)
    port = await serve_app(app, **server_options(config))
    key = await login(port, "alice", PASSWORD)  # starts alice's stock sync server
    base = f"http://127.0.0.1:{port}/"
    cases = [
        ("GET", base + "health", {}, 200),
        ("GET", base + "nowhere", {}, 404),
        ("POST", base + "sync/meta", {"anki-sync": sync_header("0" * 40).decode()}, 403),
        ("POST", base + "sync/meta", {}, 501),  # no anki-sync header: a legacy client
        # The worker's own answer (a zstd frame of no JSON: 400), passed through.
        ("POST", base + "sync/meta", {"anki-sync": sync_header(key).decode()}, 400),
        # A body that is not one zstd frame: the gateway's own refusal.
        ("POST", base + "sync/meta", {"anki-sync": sync_header(key).decode()}, 415),
        ("POST", base + "sync/hostKey", {"Content-Encoding": "gzip"}, 415),
        ("GET", f"http://127.0.0.1:{app[METRICS_PORT]}/metrics", {}, 200),
    ]
    async with aiohttp.ClientSession() as session:
        for i, (method, url, headers, status) in enumerate(cases):
            body = zstandard.compress(b"not json") if i == 4 else b"x"
            async with session.request(method, url, headers=headers, data=body) as r:
                assert (r.status, r.headers.get("Server")) == (status, SERVER), url
    # aiohttp's own answer to a request line it cannot parse.
    answer = await raw(port, b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"\r\nServer: %s\r\n" % SERVER.encode() in answer
    assert b"aiohttp" not in answer and b"Python" not in answer
