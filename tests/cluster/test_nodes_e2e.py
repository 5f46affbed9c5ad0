"""Three gateway nodes on loopback, real `anki` clients syncing through nodes chosen at random.

The registry and the directory are a moto DynamoDB server (one round-trip test also runs with
the SQLite files of a data folder the processes share). Shared storage (one collections folder):
round trips and concurrent users,
forged node-to-node requests, and a SIGKILLed node whose users sync again through the others
after its ownership leases end, with the keys they had. Local storage (a data folder per node):
a dead owner is a server error for its users only, never an AUTH error.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from anki.errors import SyncError

from gateway import config as config_mod
from gateway import protocol, standin
from gateway.cluster import move, signing
from gateway.registry import open_registry
from tests.ankiclient import Client, Required, is_auth_error
from tests.cluster.nodes import (
    SECRET,
    Cluster,
    Node,
    create_table,
    free_port,
    node_env,
    start_moto,
    users,
)

LEASE = 4.0  # GATEWAY_CLUSTER_LEASE_SECONDS in nodes.node_env
pytestmark = pytest.mark.timeout(180)


def start_cluster(
    tmp_path: Path,
    storage: str,
    people: list[standin.LocalUser],
    *,
    public: bool = False,
    backend: str = "dynamodb",
    count: int = 3,
) -> Cluster:
    moto = start_moto()
    pool_id, client_id, _ = standin.bootstrap(moto.url, people)
    shared = tmp_path / "shared"
    shared.mkdir()
    cluster = Cluster(moto, pool_id, client_id, backend, shared)
    if backend == "dynamodb":
        create_table(moto)
    for i in range(count):
        port = free_port()
        data = shared if storage == "shared" else tmp_path / f"node{i}"
        data.mkdir(exist_ok=True)
        if backend == "sqlite" and storage != "shared":
            # One host without DynamoDB: per-node folders, registry and directory files shared.
            for name in ("registry.sqlite3", "cluster.sqlite3"):
                (data / name).symlink_to(shared / name)
        extra = {"GATEWAY_CLUSTER_PUBLIC_URL": f"http://127.0.0.1:{port}/"} if public else {}
        env = node_env(moto, pool_id, client_id, f"n{i}", port, data, storage, backend, **extra)
        cluster.nodes.append(Node(f"n{i}", port, data, env, tmp_path / f"n{i}.log"))
    try:
        for node in cluster.nodes:
            node.start()
    except BaseException:
        cluster.stop()
        moto.stop()
        raise
    return cluster


def fake_aws(env: pytest.MonkeyPatch) -> None:
    """What conftest's per-test fixture does, for the module-wide clusters: never real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.delenv(name, raising=False)
    for name, value in standin.DUMMY_AWS.items():
        env.setenv(name, value)


def module_cluster(
    tmp_path_factory, storage: str, n_users: int
) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    people = users(n_users)
    with pytest.MonkeyPatch.context() as env:
        fake_aws(env)
        cluster = start_cluster(tmp_path_factory.mktemp(storage), storage, people)
        yield cluster, people
    cluster.stop()
    cluster.moto.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    """Shared storage on DynamoDB; the tests using it run in file order, the SIGKILL last."""
    yield from module_cluster(tmp_path_factory, "shared", 6)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    """Local storage on DynamoDB; the move first, the SIGKILL last."""
    yield from module_cluster(tmp_path_factory, "local", 4)


def owners(cluster: Cluster) -> dict[str, str]:
    return cluster.owners()


def owner_node(cluster: Cluster, sub: str) -> Node:
    owner_id = owners(cluster)[sub]
    return next(n for n in cluster.nodes if n.id == owner_id)


def device(tmp_path: Path, name: str) -> Client:
    return Client(tmp_path / "clients" / name)


def synced(tmp_path: Path, name: str, user: standin.LocalUser, node: Node, note: str) -> Client:
    """A device logged in through `node` that added `note` and synced it."""
    client = device(tmp_path, name)
    client.login(user.email, user.password, node.url)
    client.add_note(note)
    client.sync()
    return client


def through(client: Client, node: Node) -> Client:
    assert client.auth is not None
    client.auth.endpoint = node.url
    return client


def round_trips(cluster: Cluster, people: list[standin.LocalUser], tmp_path: Path, rounds: int):
    """Each person has two devices that log in and sync through random nodes, all at once."""
    rng = random.Random(12)
    errors: list[BaseException] = []

    def person(i: int) -> None:
        try:
            user = people[i]
            desk = device(tmp_path, f"desk{i}")
            phone = device(tmp_path, f"phone{i}")
            desk.login(user.email, user.password, rng.choice(cluster.nodes).url)
            phone.login(user.email, user.password, rng.choice(cluster.nodes).url)
            for round_ in range(rounds):
                desk.add_note(f"{user.email} desk {round_}")
                through(desk, rng.choice(cluster.nodes)).sync()
                through(phone, rng.choice(cluster.nodes)).sync()
                phone.add_note(f"{user.email} phone {round_}")
                through(phone, rng.choice(cluster.nodes)).sync()
                through(desk, rng.choice(cluster.nodes)).sync()
            expected = {f"{user.email} {d} {r}" for d in ("desk", "phone") for r in range(rounds)}
            assert desk.note_fronts() == expected
            assert phone.note_fronts() == expected
            desk.close()
            phone.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=person, args=(i,)) for i in range(len(people))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not errors, errors
    placed = owners(cluster)
    # Every account has exactly one owner item, on a node of the cluster.
    assert {p.sub for p in people} <= set(placed)
    # Requests reached nodes that do not own the account and went on to the owner.
    forwarded = sum(n.log_text().count("path=/_cluster/sync/") for n in cluster.nodes)
    assert forwarded > 0
    assert set(placed.values()) <= {n.id for n in cluster.nodes}


def test_round_trips_and_concurrent_users_through_random_nodes(shared_cluster, tmp_path):
    cluster, people = shared_cluster
    round_trips(cluster, people[:4], tmp_path, rounds=3)


def test_processes_on_one_host_sharing_a_data_folder_form_a_cluster_without_aws(tmp_path):
    people = users(2)
    cluster = start_cluster(tmp_path, "shared", people, backend="sqlite")
    try:
        round_trips(cluster, people, tmp_path, rounds=2)
    finally:
        cluster.stop()
        cluster.moto.stop()


def signed_meta(node: Node, host_key: str, *, path: str = "_cluster/sync/meta", **tweak) -> int:
    """POST one sync/meta to a node's internal route; returns the status (headers in tweak)."""
    key = signing.node_key(SECRET.encode())
    headers = signing.sign(
        key, "POST", "/" + path, "n0", signing.identity_of(host_key), time.time()
    )
    headers.update(tweak.pop("headers", {}))
    for name in tweak.pop("drop", ()):
        headers.pop(name, None)
    sync_header = protocol.SyncHeader(11, host_key, "test,1.0,linux", "s1").for_upstream(host_key)
    body = protocol.compress(json.dumps({"v": 11, "cv": "test,1.0,linux"}).encode())
    request = urllib.request.Request(  # noqa: S310 - loopback
        node.url + tweak.pop("send_to", path),
        data=body,
        method="POST",
        headers={protocol.SYNC_HEADER: sync_header, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status
    except urllib.error.HTTPError as exc:
        assert exc.headers.get(signing.REFUSED) == ("1" if exc.code == 401 else None)
        return exc.code


def test_forged_node_requests_are_refused_and_logged_without_secrets(shared_cluster, tmp_path):
    cluster, people = shared_cluster
    user = people[4]
    client = device(tmp_path, "forged")
    auth = client.login(user.email, user.password, cluster.nodes[0].url)
    client.sync()
    key = auth.hkey
    owner = owner_node(cluster, user.sub)
    # Signed with the shared secret: served (the owner's worker answers sync/meta).
    assert signed_meta(owner, key) == 200
    forged = [
        {"drop": signing.HEADERS},  # no signature at all
        {"headers": {signing.SIGNATURE: "0" * 64}},  # a made-up one
        {"headers": {signing.TIME: str(int(time.time()) - 3600)}},  # outside the window
        {"send_to": "_cluster/sync/upload"},  # a signature for another path
        {"headers": {signing.NODE: "n9"}},  # another sender than signed for
    ]
    for tweak in forged:
        assert signed_meta(owner, key, **tweak) == 401, tweak
    # A key the signature was not made for.
    assert signed_meta(owner, key, headers={protocol.SYNC_HEADER: "x"}) in (400, 401)
    log = owner.log_text()
    assert log.count("node-to-node request refused") >= len(forged)
    assert key not in log and SECRET not in log
    # The public route ignores node headers a client sends: a normal sync still works.
    through(client, cluster.nodes[1]).sync()
    client.close()


def test_a_killed_node_s_users_sync_again_through_the_others_after_its_lease(
    shared_cluster, tmp_path
):
    cluster, people = shared_cluster
    user = people[5]
    client = synced(tmp_path, "survivor", user, cluster.nodes[0], "before the crash")
    sub = user.sub
    victim = owner_node(cluster, sub)
    victim.kill()
    others = [n for n in cluster.nodes if n is not victim]
    killed_at = time.monotonic()
    client.add_note("after the crash")
    while True:
        try:
            through(client, random.choice(others)).sync()
            break
        except SyncError as exc:
            assert not is_auth_error(exc), exc  # never logged out
            assert time.monotonic() - killed_at < LEASE + 10, "no takeover in time"
            time.sleep(0.5)
    recovered = time.monotonic() - killed_at
    assert owner_node(cluster, sub) in others
    fresh = device(tmp_path, "fresh")
    fresh.login(user.email, user.password, others[0].url)
    fresh.sync()
    assert fresh.note_fronts() == {"before the crash", "after the crash"}
    print(f"recovered {recovered:.1f} s after SIGKILL (lease {LEASE} s)")
    client.close()
    fresh.close()


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


def test_a_deleted_account_s_folder_is_erased_on_its_owner_node_only_once_deleted(
    local_cluster, tmp_path
):
    cluster, people = local_cluster
    user = people[3]
    client = synced(tmp_path, "deleted", user, cluster.nodes[0], "to be deleted")
    owner = owner_node(cluster, user.sub)
    folder = owner.data_dir / "collections" / "user3"
    assert (folder / "collection.anki2").exists()

    def erase() -> int:
        url = owner.url + "_cluster/erase"
        headers = signing.sign(
            signing.node_key(SECRET.encode()),
            "POST",
            "/_cluster/erase",
            "n9",
            move.identity(user.sub, "user3"),
            time.time(),
        )
        body = json.dumps({"sub": user.sub, "name": "user3"}).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            url, data=body, method="POST", headers={**headers, "Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert erase() == 409  # a valid signature alone never erases a live account
    assert (folder / "collection.anki2").exists()
    config = config_mod.load(None, owner.env)

    async def delete() -> None:
        registry = open_registry(config)
        try:
            await registry.delete(user.sub)
        finally:
            await registry.close()

    asyncio.run(delete())
    # The owner's registry may show its cached row for registry.cache_seconds (5 s).
    deadline = time.monotonic() + 10
    while (status := erase()) == 409 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == 200
    assert not folder.exists()
    client.close()


def test_local_storage_owner_down_is_a_server_error_for_its_users_only(local_cluster, tmp_path):
    cluster, people = local_cluster
    people = people[:3]
    clients = []
    for i, user in enumerate(people):
        clients.append(synced(tmp_path, f"local{i}", user, cluster.nodes[i % 3], f"note {i}"))
    placed = owners(cluster)
    if len(set(placed.values())) == 1:
        # Placement put everyone on one node (ties between idle nodes are spread by account,
        # so this happens now and then): move one away so "others untouched" is tested.
        only = placed[people[1].sub]
        to = next(n.id for n in cluster.nodes if n.id != only)
        admin(cluster, "move", "user1", "--to", to)
        placed = owners(cluster)
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
    cluster = start_cluster(tmp_path, "local", people, public=True, count=2)
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
    """README, "From one node to three": the old node restarts as a cluster node first, adopts
    the account folders on its disk, then new nodes join; nobody logs in again, no full sync."""
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
        assert set(owners(cluster).values()) == {old.id}
        fresh = device(tmp_path, "fresh-after")
        fresh.login(people[1].email, people[1].password, cluster.nodes[2].url)
        fresh.sync()
        assert fresh.note_fronts() == {"kept 1", "via n1 1", "via n2 1"}
        for client in [*clients, fresh]:
            client.close()
    finally:
        cluster.stop()
        moto.stop()
