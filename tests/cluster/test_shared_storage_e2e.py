"""Three gateway nodes on loopback sharing one collections folder (`cluster.storage: shared`),
real `anki` clients syncing through nodes chosen at random; registry and directory on a moto
DynamoDB server (one test on the SQLite files of a data folder the processes share instead).

Round trips and concurrent users, forged node-to-node requests, and a SIGKILLed node whose
users sync again through the others after its ownership leases end, with the keys they had.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from anki.errors import SyncError

from gateway import protocol
from gateway.cluster import signing
from gateway.local import standin
from tests.ankiclient import is_auth_error
from tests.cluster.nodes import (
    SECRET,
    Cluster,
    Node,
    device,
    module_cluster,
    owner_node,
    start_cluster,
    synced,
    through,
    users,
)

pytestmark = pytest.mark.timeout(180)

LEASE = 4.0  # GATEWAY_CLUSTER_LEASE_SECONDS in nodes.node_env


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    """Shared storage on DynamoDB; the tests using it run in file order, the SIGKILL last."""
    yield from module_cluster(tmp_path_factory, "shared", 7)


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
    placed = cluster.owners()
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


def sync_until_served(client, nodes: list[Node], limit: float) -> float:
    """Sync through random nodes until one serves; seconds it took. Never an AUTH error."""
    began = time.monotonic()
    while True:
        try:
            through(client, random.choice(nodes)).sync()
            return time.monotonic() - began
        except SyncError as exc:
            assert not is_auth_error(exc), exc  # never logged out
            assert time.monotonic() - began < limit, "not served again in time"
            time.sleep(0.5)


def test_a_node_stopped_cleanly_hands_its_accounts_over_at_once(shared_cluster, tmp_path):
    cluster, people = shared_cluster
    user = people[6]
    client = synced(tmp_path, "handover", user, cluster.nodes[0], "before the stop")
    time.sleep(LEASE)  # the claim's own expiry passes: only the owner's heartbeat holds it
    victim = owner_node(cluster, user.sub)
    victim.stop()  # SIGTERM, as an orchestrator replacing a task does
    stopped_at = time.time()
    # Its heartbeat was marked ended when it stopped, not left to run out (LEASE s later).
    assert cluster.heartbeat_end(victim.id) <= stopped_at
    client.add_note("after the stop")
    took = sync_until_served(client, cluster.live_nodes(), LEASE + 10)
    assert owner_node(cluster, user.sub) in cluster.live_nodes()
    print(f"served again {took:.1f} s after a clean stop (lease {LEASE} s)")
    client.close()


def test_a_killed_node_s_users_sync_again_through_the_others_after_its_lease(
    shared_cluster, tmp_path
):
    cluster, people = shared_cluster
    user = people[5]
    client = synced(tmp_path, "survivor", user, cluster.live_nodes()[0], "before the crash")
    sub = user.sub
    victim = owner_node(cluster, sub)
    victim.kill()
    others = cluster.live_nodes()
    client.add_note("after the crash")
    recovered = sync_until_served(client, others, LEASE + 10)
    assert owner_node(cluster, sub) in others
    fresh = device(tmp_path, "fresh")
    fresh.login(user.email, user.password, others[0].url)
    fresh.sync()
    assert fresh.note_fronts() == {"before the crash", "after the crash"}
    print(f"recovered {recovered:.1f} s after SIGKILL (lease {LEASE} s)")
    client.close()
    fresh.close()
