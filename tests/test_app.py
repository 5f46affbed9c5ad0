"""The application's edges: header timeout, requests in flight per address, open files."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest

from gateway.app import create_app, server_options
from gateway.identity.fake import FakeProvider
from gateway.web.addresses import InFlight
from gateway.web.openfiles import raise_soft_limit
from tests.conftest import fake_provider_config
from tests.rawhttp import sync_header


@pytest.mark.parametrize(
    "sent",
    [
        [],  # connects and says nothing
        [b"POST /sync/meta HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 20,  # a header line at a time
    ],
)
async def test_headers_not_complete_within_the_header_timeout_are_closed(tmp_path, serve_app, sent):
    config = fake_provider_config(tmp_path, GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS="1")
    port = await serve_app(create_app(config, provider=FakeProvider()), **server_options(config))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()

    async def slowly() -> None:
        for line in sent:
            writer.write(line)
            await asyncio.sleep(0.2)

    sending = asyncio.create_task(slowly())
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
    finally:
        sending.cancel()
        writer.close()
    assert time.monotonic() - began < 2.5


async def test_requests_in_flight_per_address_are_capped_with_429(tmp_path, serve_app):
    config = fake_provider_config(
        tmp_path,
        GATEWAY_SERVER_MAX_REQUESTS_PER_ADDRESS="3",
        GATEWAY_SERVER_BODY_IDLE_TIMEOUT_SECONDS="5",
    )
    port = await serve_app(create_app(config, provider=FakeProvider()), **server_options(config))
    head = (
        b"POST /sync/hostKey HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header("")
        + b"\r\nContent-Length: 100\r\n\r\n"
    )
    held = []
    for _ in range(3):  # three logins whose bodies are slow to come
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        held.append((reader, writer))
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    for _, w in held:
        w.close()
    assert answer.startswith(b"HTTP/1.1 429"), answer[:100]
    assert b"Retry-After: 1" in answer


def test_in_flight_counts_per_address_and_forgets_idle_ones():
    counts = InFlight(2)
    assert counts.enter("a") and counts.enter("a") and not counts.enter("a")
    assert counts.enter("b")
    counts.leave("a")
    assert counts.enter("a")
    for _ in range(2):
        counts.leave("a")
    counts.leave("b")
    assert len(counts) == 0


def test_open_file_soft_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip("needs a finite hard limit of 512 or more")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_soft_limit() == (256, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
