"""The `cluster:` settings (gateway/config/): off by default, every problem named."""

from __future__ import annotations

import pytest

from gateway import config as cfg

REQUIRED = {"GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_AbC123", "GATEWAY_COGNITO_CLIENT_ID": "cid"}
NODE = {
    **REQUIRED,
    "GATEWAY_SECRET": "s" * 32,
    "GATEWAY_CLUSTER_NODE_ID": "node-1",
    "GATEWAY_CLUSTER_INTERNAL_URL": "http://10.0.1.7:8080/",
}


def test_off_unless_a_node_id_is_set():
    assert not cfg.load(None, REQUIRED).cluster.enabled
    c = cfg.load(None, NODE).cluster
    assert c.enabled and c.storage == "local" and c.lease_seconds == 30.0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"GATEWAY_SECRET": ""}, "secret: required with cluster.node_id"),
        ({"GATEWAY_CLUSTER_NODE_ID": "a/b"}, "cluster.node_id"),
        ({"GATEWAY_CLUSTER_INTERNAL_URL": ""}, "cluster.internal_url"),
        ({"GATEWAY_CLUSTER_INTERNAL_URL": "http://x:1"}, "cluster.internal_url"),
        ({"GATEWAY_CLUSTER_PUBLIC_URL": "ftp://x/"}, "cluster.public_url"),
        ({"GATEWAY_CLUSTER_STORAGE": "nfs"}, "cluster.storage"),
        ({"GATEWAY_CLUSTER_HEARTBEAT_SECONDS": "20"}, "cluster.heartbeat_seconds"),
        ({"GATEWAY_CLUSTER_MAX_CLOCK_SKEW_SECONDS": "0"}, "cluster.max_clock_skew_seconds"),
    ],
)
def test_each_problem_is_named(change, problem):
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(None, {**NODE, **change})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
