"""check-config --probe against moto (a working pool, a missing pool) and botocore's Stubber
(what moto cannot answer: a wrong secret, a missing permission, the flow switched off)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gateway.__main__ import main
from gateway.ops.probe import probe


def test_a_working_pool_passes_every_check(cognito, tmp_path) -> None:
    config = cognito.config(tmp_path, portal={"enabled": True})
    findings = probe(config)
    assert [(f.ok, f.what) for f in findings] == [
        (True, "pool, app client, auth flow, secret and AdminInitiateAuth"),
        (True, "list_users"),
        (True, "describe_user_pool"),
    ]


def test_a_missing_pool_is_named_with_its_fix(cognito, tmp_path) -> None:
    config = cognito.config(tmp_path)
    config = replace(config, cognito=replace(config.cognito, user_pool_id="eu-west-1_Missing1"))
    first = probe(config)[0]
    assert not first.ok and "not found" in first.what
    assert "cognito.user_pool_id" in first.fix


@pytest.mark.parametrize(
    ("code", "message", "fix"),
    [
        ("NotAuthorizedException", "Unable to verify secret hash for client x", "client_secret"),
        ("AccessDeniedException", "User is not authorized", "cognito-idp:AdminInitiateAuth"),
        ("InvalidParameterException", "Auth flow not enabled for this client", "ALLOW_ADMIN"),
    ],
)
def test_each_misconfiguration_gets_its_fix(cognito, tmp_path, code: str, message: str, fix: str):
    config = cognito.config(tmp_path)
    client: Any = boto3.client("cognito-idp", region_name="eu-west-1")
    with Stubber(client) as stub:
        stub.add_client_error(
            "admin_initiate_auth", service_error_code=code, service_message=message
        )
        stub.add_response("list_users", {"Users": []})
        findings = probe(config, client)
    assert not findings[0].ok and fix in findings[0].fix
    assert findings[1].ok


def test_the_command_exits_non_zero_on_a_failed_probe(cognito, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", "eu-west-1_Missing1")
    monkeypatch.setenv("GATEWAY_COGNITO_CLIENT_ID", cognito.client_id)
    assert main(["check-config", "--probe"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "fix: check cognito.user_pool_id" in out
    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", cognito.pool_id)
    assert main(["check-config", "--probe"]) == 0
