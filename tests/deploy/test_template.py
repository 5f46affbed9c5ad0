"""deploy/template.yaml: cfn-lint passes, and the template wires what the Lambda expects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
LAMBDA_SOURCE = ROOT / "lambda" / "cognito_user_provisioner.py"


def tool(name: str) -> str:
    """A console script of this virtualenv (the `test` extra), else one on PATH; never skipped."""
    script = Path(sys.executable).parent / name
    found = str(script) if script.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("cfn-lint"), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as {"Ref": ...} mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def resources_of(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def test_template_passes_cfn_lint() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def yamllint(path: Path) -> subprocess.CompletedProcess[str]:
    """yamllint with the repository's rules on `path`."""
    return subprocess.run(
        [tool("yamllint"), "-c", str(ROOT / ".yamllint.yml"), "-f", "parsable", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_template_passes_the_repository_yamllint_rules() -> None:
    result = yamllint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_really_lints_the_template(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text(encoding="utf-8")
    broken.write_text(
        text.replace("Runtime: python3.13", "Runtime: python2.7").replace(
            "!Ref UserPoolArn]", "!Ref NoSuchParameter]"
        ),
        encoding="utf-8",
    )
    result = cfn_lint(broken)
    assert result.returncode != 0
    assert "python2.7" in result.stdout and "NoSuchParameter" in result.stdout


def test_the_function_runs_the_lambda_handler_from_the_lambda_folder(
    template: dict[str, Any],
) -> None:
    [function] = resources_of(template, "AWS::Serverless::Function")
    assert function["Handler"] == "cognito_user_provisioner.lambda_handler"
    assert function["Runtime"] in {"python3.12", "python3.13"}
    code = (TEMPLATE.parent / function["CodeUri"]).resolve()
    assert code == LAMBDA_SOURCE.parent
    assert (code / "cognito_user_provisioner.py").is_file()
    # Cognito waits 5 s at most; a function allowed longer would be cut off anyway.
    assert function["Timeout"] <= 5
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": "ProvisionerLogGroup"}


def test_every_environment_variable_is_one_the_handler_reads(template: dict[str, Any]) -> None:
    [function] = resources_of(template, "AWS::Serverless::Function")
    source = LAMBDA_SOURCE.read_text(encoding="utf-8")
    names = function["Environment"]["Variables"]
    assert {"GATEWAY_PROVISION_URL", "GATEWAY_PROVISION_API_KEY"} <= set(names)
    for name in names:
        assert f'"{name}"' in source, name


def test_secrets_are_no_echo_parameters(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    assert parameters["ApiKey"]["NoEcho"] is True
    assert parameters["ApiKey"]["MinLength"] >= 16
    assert parameters["SigningSecret"]["NoEcho"] is True
    assert "Default" not in parameters["ApiKey"]


def test_only_the_configured_pool_may_invoke_the_function(template: dict[str, Any]) -> None:
    [permission] = resources_of(template, "AWS::Lambda::Permission")
    assert permission["Principal"] == "cognito-idp.amazonaws.com"
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["SourceArn"] == {
        "Fn::If": ["CreateUserPool", {"Fn::GetAtt": "UserPool.Arn"}, {"Ref": "UserPoolArn"}]
    }


def test_the_optional_pool_is_set_up_as_the_gateway_needs(template: dict[str, Any]) -> None:
    assert template["Conditions"]["CreateUserPool"] == {"Fn::Equals": [{"Ref": "UserPoolArn"}, ""]}
    [pool] = resources_of(template, "AWS::Cognito::UserPool")
    assert pool["UsernameConfiguration"] == {"CaseSensitive": False}
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["AutoVerifiedAttributes"] == ["email"]
    assert pool["LambdaConfig"]["PostConfirmation"] == {"Fn::GetAtt": "ProvisionerFunction.Arn"}
    [client] = resources_of(template, "AWS::Cognito::UserPoolClient")
    assert "ALLOW_ADMIN_USER_PASSWORD_AUTH" in client["ExplicitAuthFlows"]
    assert set(client["ReadAttributes"]) >= {"email", "email_verified"}
    for name in ("UserPool", "GatewayClient"):
        assert template["Resources"][name]["Condition"] == "CreateUserPool"


def test_the_log_group_has_a_retention(template: dict[str, Any]) -> None:
    [group] = resources_of(template, "AWS::Logs::LogGroup")
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_the_header_explains_attaching_to_an_existing_pool() -> None:
    header = TEMPLATE.read_text(encoding="utf-8").split("AWSTemplateFormatVersion")[0]
    assert "update-user-pool" in header and "PostConfirmation=" in header
    assert "RESETS every setting" in header
