"""Fencing when DynamoDB stops answering (a network partition: packets dropped, not refused).

The real DynamoDB directory and boto3 client against a moto server, reached through a relay
that can start swallowing traffic: moto cannot make itself unreachable, and a refused
connection fails fast, which hides what a silent one does to a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.aws import client as awsclient
from gateway.cluster.dynamo import DynamoDirectory
from gateway.cluster.placement import SHARED, Serve
from gateway.cluster.router import Router
from gateway.errors import Unavailable
from gateway.local import standin
from tests.cluster.nodes import TABLE, create_table, start_moto


class Relay:
    """A TCP relay to `target`; once `silent`, it passes nothing more either way."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silent = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if self.silent:
                        continue  # dropped on the floor
                    dst.write(data)
                    await dst.drain()

        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()


@pytest.fixture(scope="module")
def moto():
    server = start_moto()
    create_table(server)
    yield server
    server.stop()


async def test_a_shared_node_cut_off_from_a_silent_directory_fences_at_its_lease_end(
    moto, monkeypatch
):
    """A heartbeat that hangs (boto3 waits out its read timeout, 3 tries) must not delay the
    fence: other nodes take the node's accounts over when its lease ends, so its workers must
    stop by then, not a heartbeat's retries later."""
    for name, value in standin.DUMMY_AWS.items():
        monkeypatch.setenv(name, value)
    host, port = moto.url.removeprefix("http://").split(":")
    relay = Relay(host, int(port))
    client = awsclient.make(
        "dynamodb",
        region="eu-west-1",
        endpoint_url=await relay.start(),
        connect_timeout=2,
        read_timeout=3,  # the registry's defaults
        max_concurrency=4,
    )
    lease = 2.0
    router = Router(
        DynamoDirectory(client, TABLE),
        node_id="a",
        url="http://a/",
        storage=SHARED,
        lease_seconds=lease,
        heartbeat_seconds=0.5,
    )
    fenced: list[float] = []
    stopped = asyncio.Event()

    def fence() -> None:
        fenced.append(time.time())
        stopped.set()

    router.on_fenced = fence
    await router.start()
    try:
        assert await router.route("s1") == Serve()
        await asyncio.sleep(0.6)  # a heartbeat after the claim
        relay.silent = True
        cut = time.time()
        # A hung beat (3 tries of 3 s) fenced only ~10 s after the cut.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), timeout=lease + 12)
        assert fenced, "never fenced"
        # The lease counts from the last heartbeat that got through (before the cut).
        assert fenced[0] - cut <= lease + 1.0, f"fenced {fenced[0] - cut:.1f} s after the cut"
        with pytest.raises(Unavailable):
            await router.route("s1")
    finally:
        router._task.cancel()  # noqa: SLF001 - close() would announce through the silent relay
        with contextlib.suppress(asyncio.CancelledError):
            await router._task  # noqa: SLF001
        await relay.close()
