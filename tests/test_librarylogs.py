"""Hostile requests over raw sockets: no header value of theirs reaches any log record.

The gateway is the real app (a login starts the real stock sync server, whose host key is then
one of the secrets); a handler on the root logger at DEBUG sees every record of every logger,
aiohttp's own included, and each record is also rendered by both of the gateway's formatters.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import zstandard

from gateway.app import create_app
from gateway.identity.fake import FakeProvider
from gateway.logs import JsonFormatter, TextFormatter
from gateway.web.librarylogs import tame
from tests.conftest import fake_provider_config
from tests.rawhttp import exchange, login, sync_header

API_KEY = "Provision-Key-Very-Secret-4711"
PASSWORD = "Pass-Word-Secret-0815"
MARKER = "Big-Header-Secret-2342"


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def rendered(self) -> str:
        parts = []
        for record in self.records:
            parts += [record.getMessage(), repr(vars(record))]
            parts += [JsonFormatter().format(record), TextFormatter().format(record)]
        return "\n".join(parts)


@pytest.fixture
def every_record() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@dataclass
class Served:
    port: int


@pytest.fixture(params=[False, True], ids=["production", "handler_cancellation"])
async def gateway(request, tmp_path, serve_app):
    """The app as `run_app` serves it (aiohttp's handler_cancellation off), and with it on."""
    config = fake_provider_config(tmp_path, GATEWAY_PROVISION_API_KEYS=API_KEY)
    provider = FakeProvider()
    provider.add_user("alice", PASSWORD, "alice@example.com")
    app = create_app(config, provider=provider)
    return Served(await serve_app(app, handler_cancellation=request.param))


def hostile_requests(key: str) -> list[bytes]:
    k = key.encode()
    return [
        # A control character after the host key in the anki-sync header.
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key).replace(k, k + b"\x01")
        + b"\r\nContent-Length: 0\r\n\r\n",
        # A NUL after the API key.
        b"POST /provision-user HTTP/1.1\r\nHost: x\r\nX-API-Key: "
        + API_KEY.encode()
        + b"\x00\r\nContent-Length: 0\r\n\r\n",
        # Headers over 8 KiB: one carrying a marker, one the host key.
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + MARKER.encode()
        + b"z" * 9000
        + b"\r\nContent-Length: 0\r\n\r\n",
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key + "z" * 9000)
        + b"\r\n\r\n",
        # A request line over 8 KiB, and one with a bad method, both carrying the key.
        b"GET /sync/meta?k=" + k + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"P\x01ST /sync/meta?k=" + k + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        # An obsolete line folding and a header without a colon.
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n " + k + b"\r\n\r\n",
        b"POST /provision-user HTTP/1.1\r\nHost: x\r\nX-API-Key " + API_KEY.encode() + b"\r\n\r\n",
        # A broken chunked body behind a valid key.
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key)
        + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz"
        + k
        + b"\r\n",
        # A body aiohttp cannot decode, left unread by a refusal (its Content-Encoding: 415).
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nX-Key: "
        + k
        + b"\r\nContent-Encoding: gzip\r\nContent-Length: 40\r\n\r\n"
        + k,
        # Two Content-Lengths.
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key)
        + b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ]


async def test_malformed_requests_leave_no_secret_and_no_error_in_any_record(gateway, every_record):
    key = await login(gateway.port, "alice", PASSWORD)
    for request in hostile_requests(key):
        answer = await exchange(gateway.port, request)
        status = answer.split(b" ", 2)[1:2]
        assert status in ([b"400"], [b"404"], [b"415"], [b"501"]), answer[:200]
    await asyncio.sleep(0.2)
    text = every_record.rendered()
    for secret in (key, API_KEY, PASSWORD, MARKER):
        assert secret not in text, secret
    assert [r for r in every_record.records if r.levelno >= logging.WARNING] == []
    tamed = [r for r in every_record.records if r.getMessage() == "malformed request refused"]
    assert tamed and all(r.levelno == logging.INFO for r in tamed)


async def test_client_reset_during_the_first_64_kib_is_client_gone_not_500(gateway, every_record):
    key = await login(gateway.port, "alice", PASSWORD)
    request = (
        b"POST /sync/applyChanges HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key)
        + b"\r\nContent-Length: 100000\r\n\r\n"
        + b"x" * 1000
    )
    await exchange(gateway.port, request, reset_after=0.2)
    await asyncio.sleep(0.3)
    gone = [r for r in every_record.records if r.getMessage() == "client gone"]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO
    lines = [r for r in every_record.records if r.getMessage() == "request"]
    assert [r.status for r in lines][-1] == 499  # type: ignore[attr-defined]
    assert [r for r in every_record.records if r.levelno >= logging.WARNING] == []
    assert key not in every_record.rendered()


async def test_client_reset_during_a_streamed_upload_is_client_gone(gateway, every_record):
    key = await login(gateway.port, "alice", PASSWORD)
    body = zstandard.ZstdCompressor().compress(os.urandom(1_000_000))  # the worker reads on
    request = (
        b"POST /sync/upload HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header(key)
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body[:200_000]
    )
    await exchange(gateway.port, request, reset_after=0.3)
    await asyncio.sleep(0.3)
    assert [r.getMessage() for r in every_record.records if r.levelno >= logging.WARNING] == []
    lines = [r for r in every_record.records if r.getMessage() == "request"]
    assert [r.status for r in lines][-1] == 499  # type: ignore[attr-defined]


def record(name: str, msg: str, args: tuple, exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


def test_tame_drops_access_lines_and_strips_exception_messages():
    from aiohttp.http_exceptions import LineTooLong

    assert not tame(record("aiohttp.access", '"GET / HTTP/1.1" 200 "secret-agent"', (), None))
    bad = record("aiohttp.server", "Error handling request from %s", ("10.0.0.1",), None)
    bad.exc_info = (LineTooLong, LineTooLong("secret-line", "8190"), None)
    assert tame(bad)
    assert (bad.levelno, bad.getMessage(), bad.exc_info) == (
        logging.INFO,
        "malformed request refused",
        None,
    )
    assert (bad.client, bad.error, bad.status) == ("10.0.0.1", "LineTooLong", 400)  # type: ignore[attr-defined]
    quoted = "quotes secret-value"
    try:
        raise ValueError(quoted)
    except ValueError as exc:
        other = record("aiohttp.server", "Unhandled exception", (), exc)
    assert tame(other)
    assert other.levelno == logging.ERROR and other.exc_info is None
    assert "ValueError" in other.exc_text and "secret-value" not in other.exc_text  # type: ignore[operator]
    plain = record("aiohttp.client", "message %s", ("kept",), None)
    assert tame(plain) and plain.getMessage() == "message kept"
