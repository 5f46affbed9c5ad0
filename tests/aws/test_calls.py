"""One boto3 call on a thread pool, its failure mapped (gateway/aws/calls.py), against moto's
DynamoDB and a port nobody listens on."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from gateway.aws import client as awsclient
from gateway.aws.calls import AwsCallFailed, AwsCalls
from gateway.registry.dynamo import create_table
from tests.ports import free_port

TABLE = "calls"


@pytest.fixture
def dynamodb(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_table(client, TABLE)
        yield client


async def failed_call(calls: AwsCalls, operation: str, **params) -> AwsCallFailed:
    with pytest.raises(AwsCallFailed) as caught:
        await calls.run(operation, **params)
    return caught.value


async def test_a_call_runs_on_a_thread_of_the_pool_and_answers(dynamodb):
    threads = []
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda **_: threads.append(threading.current_thread().name)
    )
    calls = AwsCalls(dynamodb, threads=2, name="test-calls")
    answer = await calls.run("describe_table", TableName=TABLE)
    await calls.close()
    assert answer["Table"]["TableName"] == TABLE
    assert threads and threads[0].startswith("test-calls")


async def test_an_answered_error_is_refused_with_its_code_status_and_no_botocore_chain(dynamodb):
    calls = AwsCalls(dynamodb, threads=1, name="test-calls")
    failed = await failed_call(calls, "get_item", TableName="missing", Key={"pk": {"S": "x"}})
    await calls.close()
    assert (failed.kind, failed.code, failed.status) == (
        "refused",
        "ResourceNotFoundException",
        400,
    )
    assert failed.operation == "get_item" and failed.message
    assert failed.__cause__ is None and failed.__context__ is None


async def test_an_expected_code_is_the_callers_answer_raised_as_it_is(dynamodb):
    calls = AwsCalls(dynamodb, threads=1, name="test-calls")
    item = {"pk": {"S": "x"}}
    await calls.run("put_item", TableName=TABLE, Item=item)
    with pytest.raises(ClientError) as caught:
        await calls.run(
            "put_item",
            ("ConditionalCheckFailedException",),
            TableName=TABLE,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
    await calls.close()
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"


async def test_bad_parameters_are_this_gateways_setup_named_by_class_only(dynamodb):
    calls = AwsCalls(dynamodb, threads=1, name="test-calls")
    failed = await failed_call(calls, "get_item", TableName=TABLE, Key="a-secret-value")
    await calls.close()
    assert (failed.kind, failed.code) == ("setup", "ParamValidationError")
    assert "a-secret-value" not in str(failed) and failed.message == ""
    assert failed.__context__ is None


async def test_no_answer_after_the_retries_is_unreachable(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()  # nobody listens there yet
    client = awsclient.make(
        "dynamodb",
        region="eu-west-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_concurrency=1,
    )
    calls = AwsCalls(client, threads=1, name="test-calls")
    failed = await failed_call(calls, "describe_table", TableName=TABLE)
    await calls.close()
    assert (failed.kind, failed.code) == ("unreachable", "EndpointConnectionError")


async def test_a_call_after_close_fails_closed(dynamodb):
    calls = AwsCalls(dynamodb, threads=1, name="test-calls")
    await calls.close(wait=False)
    failed = await failed_call(calls, "describe_table", TableName=TABLE)
    assert (failed.kind, failed.code) == ("closed", "closed")
