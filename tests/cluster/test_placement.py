"""Placement decisions (gateway/cluster/placement.py): a table of situations."""

from __future__ import annotations

import pytest

from gateway.cluster.placement import (
    Down,
    Forward,
    Node,
    Ownership,
    Place,
    Serve,
    TakeOver,
    decide,
    least_loaded,
)

NOW = 1000.0


def node(node_id: str, load: int = 0, expires: float = NOW + 10) -> Node:
    return Node(node_id, f"http://{node_id}/", "", load, expires)


NODES = {"a": node("a", 3), "b": node("b", 1), "c": node("c", 2, expires=NOW - 1)}


@pytest.mark.parametrize(
    ("owner", "storage", "expected"),
    [
        (None, "local", Place("b")),  # the least loaded *live* node (c is dead)
        (Ownership("s", "a", NOW + 5, 1), "local", Serve()),  # mine
        (Ownership("s", "b", NOW - 100, 1), "local", Forward(NODES["b"])),  # live owner
        (Ownership("s", "c", NOW - 100, 1), "local", Down(5)),  # dead owner, local disks
        (Ownership("s", "c", NOW - 100, 1), "shared", TakeOver()),  # lease over: take it
        (Ownership("s", "c", NOW + 2.5, 1), "shared", Down(3)),  # lease still running
        (Ownership("s", "gone", NOW - 1, 1), "shared", TakeOver()),  # never heard of
    ],
)
def test_decisions(owner, storage, expected):
    assert decide(owner, NODES, "a", NOW, storage) == expected


def test_a_dead_owner_s_lease_lasts_until_its_last_heartbeat_ends():
    nodes = {"a": node("a"), "c": node("c", expires=NOW + 3)}
    owner = Ownership("s", "c", NOW - 50, 4)
    assert owner.lease_end(nodes) == NOW + 3
    # Its heartbeat is still running: it is live, so requests go there.
    assert decide(owner, nodes, "a", NOW, "shared") == Forward(nodes["c"])
    assert decide(owner, nodes, "a", NOW + 3.5, "shared") == TakeOver()


def test_ties_spread_by_pick_and_no_live_node_falls_back_to_me():
    nodes = [node("a", 1), node("b", 1), node("c", 5)]
    assert {least_loaded(nodes, NOW, "me", pick=i) for i in range(4)} == {"a", "b"}
    assert least_loaded([node("a", expires=NOW)], NOW, "me") == "me"
