"""The cluster's counters (gateway/metrics.py): what a node's router and internal routes count."""

from __future__ import annotations

import time

from aiohttp.test_utils import make_mocked_request

from gateway import metrics
from gateway.cluster import signing
from gateway.cluster.internal import Cluster
from gateway.cluster.placement import Serve
from tests.cluster.test_router import Clock, router


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_placements_takeovers_and_moves_are_counted(tmp_path):
    clock = Clock()
    a, b = router(tmp_path, "a", clock, "shared"), router(tmp_path, "b", clock, "shared")
    await a.beat()
    await b.beat()
    name = "gateway_cluster_ownership_changes_total"
    before = {c: value(name, change=c) for c in ("placed", "taken_over", "moved")}
    placed_here = await a.route("s1") == Serve()  # placed on the less loaded: a or b
    owner, other = (a, b) if placed_here else (b, a)
    assert await owner.hand_over("s1", other.node_id)
    clock.now += 11  # the new owner stops beating; the old one takes the account back
    await owner.beat()
    owner.forget("s1")
    assert await owner.route("s1") == Serve()
    after = {c: value(name, change=c) for c in ("placed", "taken_over", "moved")}
    assert {c: after[c] - before[c] for c in after} == {"placed": 1, "taken_over": 1, "moved": 1}


async def test_refused_node_requests_are_counted_by_reason(tmp_path):
    cluster = Cluster(
        router(tmp_path, "a", Clock(), "local"), signing.node_key(b"k" * 32), 30, session=None
    )  # type: ignore[arg-type]
    name = "gateway_cluster_refused_total"
    before = value(name, reason="bad_signature"), value(name, reason="unsigned")
    forged = {signing.NODE: "b", signing.TIME: str(int(time.time())), signing.SIGNATURE: "0"}
    request = make_mocked_request("POST", "/_cluster/sync/meta", headers=forged)
    answer = cluster.refuse(request, cluster.problem(request, "id") or "")
    assert answer.status == 401 and answer.headers[signing.REFUSED] == "1"
    unsigned = make_mocked_request("POST", "/_cluster/sync/meta")
    cluster.refuse(unsigned, cluster.problem(unsigned, "id") or "")
    after = value(name, reason="bad_signature"), value(name, reason="unsigned")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
