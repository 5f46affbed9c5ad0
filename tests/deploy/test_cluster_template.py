"""deploy/cluster.yaml: cfn-lint passes; the table is the layout the code uses; the policy
allows what the directory and the registry call, on that table only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.registry import dynamo
from tests.deploy.test_template import _CfnLoader, cfn_lint

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "cluster.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def test_cfn_lint_passes():
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_table_has_the_agreed_key_and_the_registry_s_indexes(template):
    table = template["Resources"]["Table"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    indexes = {i["IndexName"] for i in table["GlobalSecondaryIndexes"]}
    assert indexes == {dynamo.BY_USERNAME, dynamo.BY_EMAIL, dynamo.BY_KEY_SUB}


def test_the_policy_covers_the_directory_s_calls_on_the_table_only(template):
    statements = template["Resources"]["GatewayPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    table = next(s for s in statements if s["Sid"] == "RegistryAndCluster")
    # gateway/cluster/dynamo.py: put_item, update_item, get_item, batch_get_item.
    for action in ("PutItem", "UpdateItem", "GetItem", "BatchGetItem"):
        assert f"dynamodb:{action}" in table["Action"]
    assert "*" not in str(table["Resource"]).replace("/index/*", "")
    assert not any("Scan" in a for a in table["Action"])  # nothing here scans the table
