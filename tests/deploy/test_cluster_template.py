"""deploy/cluster.yaml (EFS for shared storage): cfn-lint and yamllint pass, the access point is
the container's user; and the registry's policy (deploy/dynamodb.yaml) allows every call the
cluster directory makes, recorded from a run against moto."""

from __future__ import annotations

import re
from typing import Any

import boto3
import yaml
from moto import mock_aws

from gateway.cluster.dynamo import DynamoDirectory
from gateway.cluster.placement import Node, Ownership
from gateway.registry.dynamo import create_table
from tests.deploy.test_template import ROOT, _CfnLoader, cfn_lint, yamllint

TEMPLATE = ROOT / "deploy" / "cluster.yaml"
REGISTRY_TEMPLATE = ROOT / "deploy" / "dynamodb.yaml"


def load(path) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def test_the_template_passes_cfn_lint_and_yamllint():
    for check in (cfn_lint, yamllint):
        result = check(TEMPLATE)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_access_point_is_the_container_s_user():
    point = load(TEMPLATE)["Resources"]["CollectionsAccessPoint"]["Properties"]
    assert point["PosixUser"] == {"Uid": "10001", "Gid": "10001"}
    assert load(TEMPLATE)["Resources"]["Collections"]["Properties"]["Encrypted"] is True


async def test_the_registry_policy_allows_every_call_of_the_directory():
    statements = load(REGISTRY_TEMPLATE)["Resources"]["GatewayRegistryPolicy"]["Properties"][
        "PolicyDocument"
    ]["Statement"]
    allowed = {a for s in statements for a in s["Action"]}
    called: set[str] = set()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_table(client, "t")
        client.meta.events.register(
            "before-call.dynamodb.*",
            lambda model, **_: called.add("dynamodb:" + model.name),
        )
        directory = DynamoDirectory(client, "t")
        await directory.announce(Node("a", "http://a/", "", 0, 10.0))
        await directory.nodes()
        first = Ownership("s", "a", 10.0, 1)
        await directory.claim(first, None)
        await directory.claim(Ownership("s", "b", 20.0, 2), first)
        await directory.owner("s")
        await directory.close()
    assert called and called <= allowed, called - allowed
    assert not any(re.search("Scan|Batch", c) for c in called)
