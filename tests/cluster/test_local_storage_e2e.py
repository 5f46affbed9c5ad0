"""Gateway nodes on loopback each with its own disk (`cluster.storage: local`), real `anki`
clients; registry and directory on a moto DynamoDB server.

A move during activity loses nothing; a deleted account's folder goes from its owner node; a
dead owner is a server error for its users only, never an AUTH error; with public URLs
`sync/meta` moves the client to its owner (308); one gateway becomes three nodes and keeps its
accounts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

import aiohttp
import pytest
from anki.errors import SyncError

from gateway import config as config_mod
from gateway import protocol
from gateway.backup import quiesce
from gateway.cluster import copy, internal, move, signing
from gateway.cluster import erase as cluster_erase
from gateway.cluster.opening import directory_for
from gateway.cluster.router import Router
from gateway.local import standin
from gateway.registry import open_registry
from gateway.workers.lock import try_lock
from tests.ankiclient import Required, is_auth_error
from tests.cluster.nodes import (
    SECRET,
    Cluster,
    Node,
    create_table,
    device,
    free_port,
    module_cluster,
    node_env,
    owner_node,
    start_cluster,
    start_moto,
    synced,
    through,
    users,
)
from tests.rawhttp import sync_header
from tests.workers.syncsession.test_wire_e2e import START, Device

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    """Local storage on DynamoDB; the move first, the SIGKILL last."""
    yield from module_cluster(tmp_path_factory, "local", 8)


def test_a_move_during_activity_loses_nothing_and_keeps_the_key(local_cluster, tmp_path):
    cluster, people = local_cluster
    user = people[0]
    client = device(tmp_path, "mover")
    auth = client.login(user.email, user.password, cluster.nodes[0].url)
    client.add_media("m.png", b"\x89PNG" + bytes(range(256)) * 50)
    client.sync()
    source = owner_node(cluster, user.sub)
    target = next(n for n in cluster.nodes if n is not source)
    added: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def activity() -> None:
        rng = random.Random(3)
        i = 0
        while not stop.is_set():
            front = f"during {i}"
            client.add_note(front)
            added.append(front)
            i += 1
            try:
                through(client, rng.choice(cluster.nodes)).sync()
            except SyncError as exc:
                if is_auth_error(exc):
                    failures.append(exc)
                    return
                time.sleep(0.2)  # 503 while the account moves: Anki says "try again"

    worker = threading.Thread(target=activity)
    worker.start()
    time.sleep(1.5)
    said = admin(cluster, "move", "user0", "--to", target.id)
    time.sleep(1.5)
    stop.set()
    worker.join(60)
    assert f"user0: moved to {target.id}" in said
    assert not failures
    assert owner_node(cluster, user.sub) is target
    assert client.auth is not None and client.auth.hkey == auth.hkey  # no re-login
    through(client, random.choice(cluster.nodes)).sync()
    fresh = device(tmp_path, "after-move")
    fresh.login(user.email, user.password, source.url)
    fresh.sync()
    assert fresh.note_fronts() == client.note_fronts()
    assert set(added) <= fresh.note_fronts() and len(added) > 2
    assert fresh.media_bytes("m.png") == client.media_bytes("m.png")
    assert any(
        p.name.startswith(".moved-user0-") for p in (source.data_dir / "collections").iterdir()
    )
    client.close()
    fresh.close()


def test_a_request_whose_body_was_still_arriving_when_its_account_moved_is_not_served_there(
    local_cluster, tmp_path
):
    """A request routed before a move, whose (small) body arrives after the move: the old
    owner must not start a worker for it on a fresh, empty folder (the request's writes would
    land on a node that no longer owns the account); 503, and the client tries again."""
    cluster, people = local_cluster
    user = people[2]
    client = synced(tmp_path, "slow-body", user, cluster.nodes[0], "before the move")
    assert client.auth is not None
    source = owner_node(cluster, user.sub)
    target = next(n for n in cluster.nodes if n is not source)
    body = protocol.compress(b'{"v":11,"cv":"test"}')
    head = (
        b"POST /sync/meta HTTP/1.1\r\nHost: x\r\nConnection: close\r\nanki-sync: "
        + sync_header(client.auth.hkey)
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    )

    async def slow_meta() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        try:
            writer.write(head + body[:4])
            await writer.drain()
            await asyncio.sleep(1.0)  # routed on the source, the body not in yet
            said = await asyncio.to_thread(admin, cluster, "move", "user2", "--to", target.id)
            assert f"user2: moved to {target.id}" in said
            writer.write(body[4:])
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()

    answer = asyncio.run(slow_meta())
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert not (source.data_dir / "collections" / "user2").exists()
    through(client, source).sync()  # served by the new owner, through the old one
    assert "before the move" in client.note_fronts()
    client.close()


def test_a_captured_move_request_is_accepted_once_and_never_re_targeted(local_cluster, tmp_path):
    """Issue 21: the signature covers the target node, and each signed move is spent once in
    the registry every node sees: sent again within the replay window (to the new owner, with
    another `to` or the same) it is refused (401) and the account stays where it went."""
    cluster, people = local_cluster
    user = people[4]
    client = synced(tmp_path, "retarget", user, cluster.nodes[0], "before the moves")
    source = owner_node(cluster, user.sub)
    first, second = [n for n in cluster.nodes if n is not source][:2]
    headers = signing.sign(
        signing.node_key(SECRET.encode()),
        "POST",
        "/_cluster/move",
        "command@test",
        move.move_identity(user.sub, "user4", first.id),
        time.time(),
    )

    def send(node: Node, to: str) -> int:
        body = json.dumps({"sub": user.sub, "name": "user4", "to": to}).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            node.url + "_cluster/move",
            data=body,
            method="POST",
            headers={**headers, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert send(source, first.id) == 200
    assert owner_node(cluster, user.sub) is first
    assert send(first, second.id) == 401  # re-targeted
    assert send(first, first.id) == 401  # sent again as it was
    assert owner_node(cluster, user.sub) is first
    through(client, first).sync()
    assert "before the moves" in client.note_fronts()
    client.close()


def test_a_sync_cut_by_a_move_is_told_to_try_again_and_its_old_node_never_has_the_folder_again(
    local_cluster, tmp_path
):
    """Issue 21: a sync half-way (`meta`, `start` answered) when its account moves. Its next
    request, through either node, is 503 + Retry-After (the client syncs again), never the
    worker's 409; and nothing on the old node (the backup gate's watcher of open syncs, the
    sync lease, a request's passage) creates `collections/<name>/` there again."""
    cluster, people = local_cluster
    user = people[5]
    client = synced(tmp_path, "half-way", user, cluster.nodes[0], "before the cut")
    assert client.auth is not None
    source = owner_node(cluster, user.sub)
    target = next(n for n in cluster.nodes if n is not source)
    half = Device(source.url, client.auth.hkey, "cut")
    assert half.send("meta", {"v": 11, "cv": "test"})[0] == 200
    assert half.send("start", START)[0] == 200
    said = admin(cluster, "move", "user5", "--to", target.id)
    assert f"user5: moved to {target.id}" in said
    folder = source.data_dir / "collections" / "user5"
    assert not folder.exists()
    for node in (source, target):
        answer = Device(node.url, client.auth.hkey, "cut").post("applyChanges", {"changes": {}})
        assert answer.status_code == 503, answer.content[:200]
        assert int(answer.headers["Retry-After"]) > 0
    deadline = time.monotonic() + 3  # a dozen rounds of the gate's watcher
    while time.monotonic() < deadline:
        assert not folder.exists()
        time.sleep(0.1)
    through(client, source).sync()  # served by the new owner, through the old one
    assert "before the cut" in client.note_fronts()
    assert not folder.exists()
    client.close()


def _receive(node: Node, sub: str, name: str, archive: bytes, sender: str) -> tuple[dict, str]:
    """A `_cluster/receive` request as `sender` signs it: its headers and URL."""
    digest = hashlib.sha256(archive).hexdigest()
    headers = signing.sign(
        signing.node_key(SECRET.encode()),
        "POST",
        "/_cluster/receive",
        sender,
        move.copy_identity(sub, name, digest),
        time.time(),
    )
    headers[move.ARCHIVE] = digest
    return headers, node.url + "_cluster/receive?" + urllib.parse.urlencode(
        {"sub": sub, "name": name}
    )


def _post(url: str, body: bytes, headers: dict) -> int:
    return _answer(url, body, headers)[0]


def _answer(url: str, body: bytes, headers: dict) -> tuple[int, Message]:
    """The status and headers of a POST."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            return answer.status, answer.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_a_captured_archive_copy_never_puts_a_stale_copy_on_a_node_the_account_left(
    local_cluster, tmp_path
):
    """Issue 21: an account's archive copy captured on its way to a node, sent again within
    the replay window once the account has moved on from there, is refused (401: spent);
    and a copy signed afresh by a node that is not the account's owner is refused (409):
    a node takes a copy only from the account's owner."""
    cluster, people = local_cluster
    user = people[6]
    client = synced(tmp_path, "stale-copy", user, cluster.nodes[0], "first")
    first = owner_node(cluster, user.sub)
    second, third = [n for n in cluster.nodes if n is not first]
    packed = tmp_path / "copy.tar"
    copy.pack(first.data_dir / "collections" / "user6", packed)
    archive = packed.read_bytes()
    captured = _receive(second, user.sub, "user6", archive, first.id)
    headers, url = captured
    assert _post(url, archive, headers) == 200  # a copy whose move went no further
    admin(cluster, "move", "user6", "--to", second.id)
    admin(cluster, "move", "user6", "--to", third.id)
    assert owner_node(cluster, user.sub) is third
    gone = second.data_dir / "collections" / "user6"
    assert not gone.exists()
    assert _post(url, archive, headers) == 401  # the copy to `second`, sent again
    headers, url = _receive(second, user.sub, "user6", archive, first.id)
    assert _post(url, archive, headers) == 409  # signed afresh by a node not the owner
    assert not gone.exists()
    client.add_note("second")
    through(client, second).sync()
    fresh = device(tmp_path, "stale-copy-fresh")
    fresh.login(user.email, user.password, first.url)
    fresh.sync()
    assert fresh.note_fronts() == {"first", "second"}
    client.close()
    fresh.close()


def test_unsigned_internal_requests_count_against_the_per_address_limit(local_cluster):
    """`_cluster/hostkey` (also move, erase) reads its small body before it can check the
    signature over it: held open by anyone reaching the port, such requests count per address
    like any other (server.max_requests_per_address, 32 here), or one address could hold any
    number of them. Only forwarded sync requests, refused unsigned before any body byte is
    read, are counted where their clients connected."""
    cluster, _ = local_cluster
    node = cluster.nodes[1]
    head = (
        b"POST /_cluster/hostkey HTTP/1.1\r\nHost: x\r\nanki-sync: "
        + sync_header("")
        + b"\r\nContent-Length: 100\r\n\r\n{"
    )

    async def hold_and_ask() -> bytes:
        held = []
        try:
            for _ in range(32):
                reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
                writer.write(head)
                await writer.drain()
                held.append(writer)
            await asyncio.sleep(1.0)  # all 32 are in, waiting for the rest of their bodies
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            held.append(writer)
            body = b'{"sub": "x"}'
            writer.write(
                b"POST /_cluster/hostkey HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 30)
        finally:
            for writer in held:
                writer.transport.abort()

    answer = asyncio.run(hold_and_ask())
    assert answer.startswith(b"HTTP/1.1 429"), answer[:100]


def test_a_deleted_account_s_folder_is_erased_on_its_owner_node_only_once_deleted(
    local_cluster, tmp_path
):
    cluster, people = local_cluster
    user = people[3]
    client = synced(tmp_path, "deleted", user, cluster.nodes[0], "to be deleted")
    owner = owner_node(cluster, user.sub)
    folder = owner.data_dir / "collections" / "user3"
    assert (folder / "collection.anki2").exists()

    sent: list[dict[str, str]] = []

    def erase(headers: dict[str, str] | None = None) -> int:
        headers = headers or _erase_signature(user.sub, "user3")
        sent.append(headers)
        return _post(*_erase_request(owner, user.sub, "user3", headers))

    assert erase() == 409  # a valid signature alone never erases a live account
    assert (folder / "collection.anki2").exists()
    _delete_from_registry(owner, user.sub)
    # The owner's registry may show its cached row for registry.cache_seconds (5 s).
    deadline = time.monotonic() + 10
    while (status := erase()) == 409 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200
    assert not folder.exists()
    assert erase(sent[-1]) == 401  # accepted once: the same request again is a replay
    client.close()


def _erase_signature(sub: str, name: str) -> dict[str, str]:
    """`_cluster/erase`'s headers, signed now by a node "n9"."""
    return signing.sign(
        signing.node_key(SECRET.encode()),
        "POST",
        "/_cluster/erase",
        "n9",
        move.identity(sub, name),
        time.time(),
    )


def _erase_request(
    owner: Node, sub: str, name: str, headers: dict[str, str]
) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps({"sub": sub, "name": name}).encode()
    return owner.url + "_cluster/erase", body, {**headers, "Content-Type": "application/json"}


def _delete_from_registry(node: Node, sub: str) -> None:
    """The account's row gone, as a deletion on any node leaves it."""

    async def delete() -> None:
        registry = open_registry(config_mod.load(None, node.env))
        try:
            await registry.delete(sub)
        finally:
            await registry.close()

    asyncio.run(delete())


@dataclass
class _Recording(internal.Cluster):
    """A node's cluster side that keeps the headers of every request it signs."""

    sent: list[dict[str, str]] = field(default_factory=list)

    def sign(self, method: str, url: str, identity: str) -> dict[str, str]:
        headers = super().sign(method, url, identity)
        self.sent.append(headers)
        return headers


async def _erase_remote_as(node: Node, sub: str, name: str) -> tuple[str | None, _Recording]:
    """`erase_remote` run here as `node` would run it: its config, a router on the cluster's
    directory (one beat, for the node list), the node key."""
    config = config_mod.load(None, node.env)
    directory = directory_for(config)
    router = Router(
        directory,
        node_id=node.id,
        url=node.url,
        lease_seconds=config.cluster.lease_seconds,
        heartbeat_seconds=config.cluster.heartbeat_seconds,
    )
    try:
        await router.beat()
        async with aiohttp.ClientSession() as session:
            key = signing.node_key(SECRET.encode())
            sender = _Recording(router, key, config.cluster.max_clock_skew_seconds, session)
            return await cluster_erase.erase_remote(sender, sub, name), sender
    finally:
        await directory.close()


def test_the_owner_erases_only_through_the_backup_handshake_and_is_asked_again(
    local_cluster, tmp_path
):
    """The owner node removes a deleted account's folder only as `accounts prune` and the
    portal do (backup/erase.py): while a backup holds the account, the erase is a 503 with
    Retry-After (never 401/403) and the folder stays whole; while a sync server holds the
    account's worker lock (another gateway process's, or one starting for a request admitted
    just before the deletion) it waits for it; the deleting node asks again until it is done.
    Before, the owner stopped its own process's server and removed the folder at once."""
    cluster, people = local_cluster
    user = people[7]
    client = synced(tmp_path, "held", user, cluster.nodes[0], "held")
    owner = owner_node(cluster, user.sub)
    sender = next(n for n in cluster.nodes if n is not owner)
    collections = owner.data_dir / "collections"
    folder = collections / "user7"
    _delete_from_registry(owner, user.sub)
    want = quiesce.post(folder, force_at=math.inf)  # a backup wants the account
    assert want is not None
    headers = _erase_signature(user.sub, "user7")
    deadline = time.monotonic() + 10  # the owner's cached registry row (409) first
    while (answer := _answer(*_erase_request(owner, user.sub, "user7", headers)))[0] == 409:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    status, answer_headers = answer
    assert status == 503 and int(answer_headers["Retry-After"]) > 0
    assert signing.REFUSED not in answer_headers
    assert (folder / "collection.anki2").exists()
    (logged,) = [line for line in owner.log_text().splitlines() if "erased now" in line]
    assert "account=user7" in logged and "reason=a backup" in logged
    # The want made the owner's gate stop its idle sync server: the lock is free to take, as a
    # server starting in another gateway process on that node would take it.
    deadline = time.monotonic() + 20
    while (lock := try_lock(collections, "user7")) is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    whole_under_the_lock: list[bool] = []

    def release_the_lock() -> None:
        whole_under_the_lock.append((folder / "collection.anki2").exists())
        lock.release()

    timers = [threading.Timer(1.5, want.release), threading.Timer(4.0, release_the_lock)]
    for timer in timers:
        timer.start()
    began = time.monotonic()
    problem, asked = asyncio.run(_erase_remote_as(sender, user.sub, "user7"))
    took = time.monotonic() - began
    for timer in timers:
        timer.join()
    assert problem is None
    assert whole_under_the_lock == [True]  # waited for the worker lock, the folder untouched
    assert took >= 4.0 and len(asked.sent) >= 2  # asked again after a 503
    assert not folder.exists()
    url, body, last = _erase_request(owner, user.sub, "user7", asked.sent[-1])
    assert _post(url, body, last) == 401  # the request that erased it, sent again: a replay
    assert _post(*_erase_request(owner, user.sub, "user7", headers)) == 401  # spent on its 503
    assert not folder.exists()
    client.close()


def test_local_storage_owner_down_is_a_server_error_for_its_users_only(local_cluster, tmp_path):
    cluster, people = local_cluster
    people = people[:3]
    clients = []
    for i, user in enumerate(people):
        clients.append(synced(tmp_path, f"local{i}", user, cluster.nodes[i % 3], f"note {i}"))
    placed = cluster.owners()
    if len(set(placed.values())) == 1:
        # Placement put everyone on one node (ties between idle nodes are spread by account,
        # so this happens now and then): move one away so "others untouched" is tested.
        only = placed[people[1].sub]
        to = next(n.id for n in cluster.nodes if n.id != only)
        admin(cluster, "move", "user1", "--to", to)
        placed = cluster.owners()
    victim_id = placed[people[0].sub]
    victim = next(n for n in cluster.nodes if n.id == victim_id)
    victim.kill()
    others = [n for n in cluster.nodes if n is not victim]
    refused = served = 0
    for client, user in zip(clients, people, strict=True):
        for node in others:
            if placed[user.sub] == victim.id:
                with pytest.raises(SyncError) as caught:
                    through(client, node).sync()
                assert not is_auth_error(caught.value)  # a server error, never a logout
                refused += 1
            else:
                through(client, node).sync()
                served += 1
    assert refused >= len(others) and served >= len(others)
    logs = "".join(n.log_text() for n in others)
    assert "status=503" in logs and "status=403" not in logs


def admin(cluster: Cluster, *argv: str) -> str:
    """`python -m gateway accounts ...` with a node's configuration; its output."""
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "gateway", "accounts", *argv],
        env=cluster.nodes[0].env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_with_public_urls_sync_meta_moves_the_client_to_its_owner(tmp_path):
    people = users(1)
    cluster = start_cluster(tmp_path, "local", people, public=True, count=2, metrics=True)
    try:
        user = people[0]
        client = device(tmp_path, "moved")
        client.login(user.email, user.password, cluster.nodes[0].url)
        owner = owner_node(cluster, user.sub)
        other = next(n for n in cluster.nodes if n is not owner)
        client.add_note("one")
        through(client, other).sync()  # 308 from sync/meta, then the owner directly
        assert client.auth is not None and client.auth.endpoint == owner.url
        client.add_note("two")
        client.sync()
        assert "client moved to its owner node" in other.log_text()
        counted = "gateway_cluster_requests_total"
        assert other.metric(counted, outcome="redirected") >= 1
        assert owner.metric(counted, outcome="here") >= 2  # two syncs' requests, served there
        assert "path=/_cluster/sync/" not in other.log_text()
        fresh = device(tmp_path, "moved-fresh")
        fresh.login(user.email, user.password, other.url)
        fresh.sync()
        assert fresh.note_fronts() == {"one", "two"}
        client.close()
        fresh.close()
    finally:
        cluster.stop()
        cluster.moto.stop()


def test_a_single_gateway_becomes_three_nodes_and_keeps_its_accounts(tmp_path):
    """docs/deploy/several-nodes.md, "From one node to three": the old node restarts as a
    cluster node first, adopts the account folders on its disk, then new nodes join; nobody logs
    in again, no full sync."""
    people = users(2)
    moto = start_moto()
    pool_id, client_id, _ = standin.bootstrap(moto.url, people)
    create_table(moto)
    cluster = Cluster(moto, pool_id, client_id)
    for i in range(3):
        data = tmp_path / f"node{i}"
        data.mkdir()
        port = free_port()
        env = node_env(moto, pool_id, client_id, f"n{i}", port, data, "local")
        cluster.nodes.append(Node(f"n{i}", port, data, env, tmp_path / f"n{i}.log"))
    old = cluster.nodes[0]
    single = {k: v for k, v in old.env.items() if not k.startswith("GATEWAY_CLUSTER_")}
    try:
        # One gateway, no cluster: both users sync (the second one stays idle afterwards).
        old.env, clustered = single, old.env
        old.start()
        clients = []
        for i, user in enumerate(people):
            client = device(tmp_path, f"single{i}")
            client.login(user.email, user.password, old.url)
            client.add_note(f"kept {i}")
            client.sync()
            clients.append(client)
        old.stop()
        old.env = clustered
        old.start()
        deadline = time.monotonic() + 30
        while "account folders adopted" not in old.log_text():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for node in cluster.nodes[1:]:
            node.start()
        for i, client in enumerate(clients):
            for node in cluster.nodes[1:]:
                client.add_note(f"via {node.id} {i}")
                assert through(client, node).sync() in (Required.NO_CHANGES, Required.NORMAL_SYNC)
        assert set(cluster.owners().values()) == {old.id}
        fresh = device(tmp_path, "fresh-after")
        fresh.login(people[1].email, people[1].password, cluster.nodes[2].url)
        fresh.sync()
        assert fresh.note_fronts() == {"kept 1", "via n1 1", "via n2 1"}
        for client in [*clients, fresh]:
            client.close()
    finally:
        cluster.stop()
        moto.stop()
