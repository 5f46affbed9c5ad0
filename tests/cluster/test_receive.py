"""The target's side of a move (`_cluster/receive`, gateway/cluster/move.py): the real route
and the real sender, in one process, over HTTP on loopback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.appkeys import REGISTRY
from gateway.cluster import copy, move, signing
from gateway.cluster.internal import CLUSTER, SEGMENT, Cluster
from gateway.registry.sqlite import SqliteRegistry
from tests.cluster.test_router import Clock, router


def account_folder(path: Path, note: str) -> Path:
    path.mkdir(parents=True)
    with sqlite3.connect(path / "collection.anki2") as db:
        db.execute("CREATE TABLE notes (front TEXT)")
        db.execute("INSERT INTO notes VALUES (?)", (note,))
    db.close()
    return path


async def test_a_signed_copy_cannot_be_sent_again_with_another_archive(tmp_path, aiohttp_client):
    """The signature is over the account, not the body; someone who saw a move's request on
    the internal network could send it again within the replay window with an archive of
    their own (a valid one: the manifest is inside), and the target would put it in place
    as the account's folder. The archive's SHA-256 is signed too."""
    collections = tmp_path / "target"
    key = signing.node_key(b"k" * 32)
    app = web.Application()

    async def receive(request: web.Request) -> web.StreamResponse:
        return await move.receive(request, collections)

    app.router.add_post("/" + SEGMENT + "receive", receive)
    app[CLUSTER] = Cluster(router(tmp_path, "b", Clock(), "local"), key, 30, session=None)  # type: ignore[arg-type]
    # Where the signatures are spent (accepted once), shared by both sides here.
    app[REGISTRY] = SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "unused")
    client = await aiohttp_client(app)
    base = str(client.make_url("/"))
    seen: list[tuple[dict[str, str], dict[str, str]]] = []

    async def keep(session, trace_context, params):  # noqa: ARG001
        seen.append((dict(params.headers), dict(params.url.query)))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_end.append(keep)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        sender = Cluster(router(tmp_path, "a", Clock(), "local"), key, 30, session)
        assert await sender.router.adopt("sub-a")  # a copy is taken only from the owner
        honest = tmp_path / "honest.tar"
        copy.pack(account_folder(tmp_path / "src" / "alice", "mine"), honest)
        await move._send(sender, base, "sub-a", "alice", honest)  # noqa: SLF001
        assert (collections / "alice" / "collection.anki2").exists()
        # The same request again, with another archive (a valid one) as its body.
        forged = tmp_path / "forged.tar"
        copy.pack(account_folder(tmp_path / "evil" / "alice", "theirs"), forged)
        headers, query = seen[0]
        async with session.post(
            base + SEGMENT + "receive",
            params=query,
            headers={k: v for k, v in headers.items() if k.lower().startswith("x-gateway")},
            data=forged.read_bytes(),
        ) as answer:
            status = answer.status
    await app[REGISTRY].close()
    assert status != 200
    with sqlite3.connect(collections / "alice" / "collection.anki2") as db:
        assert db.execute("SELECT front FROM notes").fetchall() == [("mine",)]
    db.close()
