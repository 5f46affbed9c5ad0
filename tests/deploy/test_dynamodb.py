"""deploy/dynamodb.yaml: cfn-lint and yamllint pass, its table is the one `create_table` makes,
and its IAM policy allows exactly the calls gateway/registry/dynamo.py makes (through
tablecalls.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from gateway.registry import dynamo
from tests.deploy.test_template import ROOT, _CfnLoader, cfn_lint, yamllint

TEMPLATE = ROOT / "deploy" / "dynamodb.yaml"
#: boto3 operation → the IAM actions it needs (a transaction: those of the writes inside).
ACTIONS = {
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def test_the_template_passes_cfn_lint_and_yamllint() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    result = yamllint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


class Recorder:
    """Records `create_table`'s request instead of sending it."""

    def __init__(self) -> None:
        self.request: dict[str, Any] = {}
        self.ttl: dict[str, Any] = {}

    def create_table(self, **request: Any) -> None:
        self.request = request

    def update_time_to_live(self, **request: Any) -> None:
        self.ttl = request["TimeToLiveSpecification"]

    def get_waiter(self, name: str) -> Any:
        return self

    def wait(self, **kwargs: Any) -> None:
        pass


def _sorted(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item[key])


def test_the_table_is_the_one_create_table_makes(template: dict[str, Any]) -> None:
    recorder = Recorder()
    dynamo.create_table(recorder, "t")
    made = recorder.request
    table = template["Resources"]["RegistryTable"]
    assert table["DeletionPolicy"] == "Retain"
    props = table["Properties"]
    assert props["BillingMode"] == made["BillingMode"]
    assert props["KeySchema"] == made["KeySchema"]
    assert _sorted(props["AttributeDefinitions"], "AttributeName") == _sorted(
        made["AttributeDefinitions"], "AttributeName"
    )
    assert _sorted(props["GlobalSecondaryIndexes"], "IndexName") == _sorted(
        made["GlobalSecondaryIndexes"], "IndexName"
    )
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    # Nonce items expire on their own (issue 21): the template's TTL is create_table's.
    assert props["TimeToLiveSpecification"] == recorder.ttl
    assert recorder.ttl == {"Enabled": True, "AttributeName": dynamo.TTL_ATTRIBUTE}


def test_the_policy_allows_exactly_the_calls_the_registry_makes(template: dict[str, Any]) -> None:
    # Every call goes through tablecalls.py's `call` (and `all_pages` for scans and queries).
    source = "".join(
        (ROOT / "gateway" / "registry" / name).read_text(encoding="utf-8")
        for name in ("dynamo.py", "tablecalls.py", "tablecopy.py")
    )
    called = set(re.findall(r'\.call\(\s*"(\w+)"', source))
    called |= set(re.findall(r'\.all_pages\("(\w+)"', source))
    assert called, "no calls found: has `call` been renamed?"
    needed = set().union(*(ACTIONS[operation] for operation in called))
    policy = template["Resources"]["GatewayRegistryPolicy"]["Properties"]["PolicyDocument"]
    [statement] = policy["Statement"]
    assert set(statement["Action"]) == needed
    assert statement["Resource"] == [
        {"Fn::GetAtt": "RegistryTable.Arn"},
        {"Fn::Sub": "${RegistryTable.Arn}/index/*"},
    ]
