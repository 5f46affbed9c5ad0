"""deploy/aws/stack.yaml, the whole AWS deployment: cfn-lint and checkov pass on it and on the
templates it nests; its task runs a configuration the gateway accepts (DynamoDB registry, shared
EFS collections, one cluster node per task, the portal on its own host); the load balancer closes
idle connections before the gateway does; its IAM names exactly the calls the gateway makes; an
alarm stands for every Prometheus alert; its metric filters name loggers the code uses.

checkov cannot share the project's virtualenv (it pins boto3 1.35 and packaging < 24, which the
project and pytest outgrew): .ci/run installs it into .venv-iac; without it the checkov tests
skip, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as cfg
from tests.deploy.test_template import ROOT, _CfnLoader, cfn_lint, yamllint
from tests.ports import free_port

STACK = ROOT / "deploy" / "aws" / "stack.yaml"
NESTED = ("template.yaml", "dynamodb.yaml", "cluster.yaml")
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.load(STACK.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506


def resource(stack: dict[str, Any], name: str) -> dict[str, Any]:
    return stack["Resources"][name]["Properties"]


def container(stack: dict[str, Any]) -> dict[str, Any]:
    (gateway,) = resource(stack, "TaskDefinition")["ContainerDefinitions"]
    return gateway


def checkov() -> str:
    found = ROOT / ".venv-iac" / "bin" / "checkov"
    if found.exists():
        return str(found)
    on_path = shutil.which("checkov")
    if on_path:
        return on_path
    if os.environ.get("CI") == "true":
        pytest.fail("checkov must be installed in CI (.ci/run makes .venv-iac)")
    pytest.skip(
        "checkov is not installed (python3 -m venv .venv-iac && .venv-iac/bin/pip "
        "install checkov; .ci/run does it)"
    )


def run_checkov(*files: Path) -> subprocess.CompletedProcess[str]:
    args = [a for f in files for a in ("-f", str(f))]
    return subprocess.run(
        [checkov(), "--quiet", "--compact", "--skip-download", "--framework", "cloudformation",
         *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip


def test_the_stack_passes_cfn_lint_and_yamllint() -> None:
    for check in (cfn_lint, yamllint):
        result = check(STACK)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_and_the_templates_it_nests_pass_checkov() -> None:
    result = run_checkov(STACK, *(ROOT / "deploy" / name for name in NESTED))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout
    # Every skip says why.
    for path in (STACK, *(ROOT / "deploy" / name for name in NESTED)):
        text = path.read_text(encoding="utf-8")
        for skip in re.findall(r"- id: (CKV\w+)\n\s+comment: (?:>-\n\s+)?(\S.*)", text):
            assert len(skip[1]) > 20, (path, skip)


def test_checkov_fails_a_stack_that_breaks_its_rules(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        STACK.read_text(encoding="utf-8").replace(
            "TransitEncryption: ENABLED", "TransitEncryption: DISABLED"
        )
    )
    result = run_checkov(broken)
    assert result.returncode != 0
    assert "CKV_AWS_97" in result.stdout  # EFS traffic of a task definition not encrypted


def test_the_nested_templates_are_the_files_beside_it(stack: dict[str, Any]) -> None:
    nested = {
        name: r["Properties"]["TemplateURL"]
        for name, r in stack["Resources"].items()
        if r["Type"] == "AWS::CloudFormation::Stack"
    }
    assert sorted(nested.values()) == sorted(f"../{n}" for n in NESTED)
    for url in nested.values():
        assert (STACK.parent / url).is_file()
    assert resource(stack, "Identity")["Parameters"]["SesIdentityArn"] == {"Ref": "SesIdentityArn"}


def test_one_task_to_three_is_the_desired_count_parameter(stack: dict[str, Any]) -> None:
    assert resource(stack, "Service")["DesiredCount"] == {"Ref": "DesiredCount"}
    assert stack["Parameters"]["DesiredCount"]["Default"] == 1
    assert stack["Parameters"]["DesiredCount"]["MaxValue"] >= 3
    for name, parameter in stack["Parameters"].items():
        assert len(parameter.get("Description", "")) > 15, name
        assert name in (ROOT / "docs" / "deploy" / "aws.md").read_text(encoding="utf-8"), name


def task_environment(stack: dict[str, Any], node: str = "", address: str = "") -> dict[str, str]:
    """The task's variables as the gateway sees them: CloudFormation values stood in for, the
    secrets as ECS injects them, and what the entrypoint adds."""
    stand_ins = {
        "Identity.Outputs.UserPoolId": "eu-west-1_AbCdEf123",
        "Identity.Outputs.GatewayClientId": "client-id",
        "Registry.Outputs.TableName": "anki-gateway",
        "AWS::Region": "eu-west-1",
        "MaxWorkers": "50",
        "PortalDomain": "signup.example.com",
    }

    def value(v: Any) -> str:
        if isinstance(v, str):
            return v
        if "Fn::Sub" in v:
            return v["Fn::Sub"].replace("${SyncDomain}", "sync.example.com")
        key = v.get("Ref") or v.get("Fn::GetAtt")
        return stand_ins[key if isinstance(key, str) else ".".join(key)]

    env = {e["Name"]: value(e["Value"]) for e in container(stack)["Environment"]}
    env.update({s["Name"]: "s" * 48 for s in container(stack)["Secrets"]})
    if node:
        env.update(GATEWAY_CLUSTER_NODE_ID=node, GATEWAY_CLUSTER_INTERNAL_URL=address)
    return env


def test_the_task_runs_a_configuration_the_gateway_accepts(stack: dict[str, Any]) -> None:
    config = cfg.load(
        None, task_environment(stack, "0123456789abcdef0123456789abcdef", "http://10.0.1.7:8080/")
    )
    assert config.registry.backend == "dynamodb"
    assert config.cluster.enabled and config.cluster.storage == "shared"
    assert config.portal.enabled and config.portal.host == "signup.example.com"
    assert config.portal.public_url == "https://sync.example.com/"
    assert config.server.trust_forwarded_for
    assert config.secret is not None and config.provision.api_keys
    # Collections on EFS under the data folder; the root file system read-only, non-root.
    mounts = {m["ContainerPath"]: m["SourceVolume"] for m in container(stack)["MountPoints"]}
    assert mounts[str(config.collections_dir)] == "collections"
    assert container(stack)["ReadonlyRootFilesystem"] is True
    assert container(stack)["User"] == "10001:10001"
    assert container(stack)["HealthCheck"]["Command"][1:] == ["python", "-m", "gateway", "health"]


def test_the_load_balancer_closes_idle_connections_before_the_gateway(
    stack: dict[str, Any],
) -> None:
    attributes = {
        a["Key"]: a["Value"] for a in resource(stack, "LoadBalancer")["LoadBalancerAttributes"]
    }
    idle = float(attributes["idle_timeout.timeout_seconds"])
    config = cfg.load(None, task_environment(stack))
    assert idle < config.server.keepalive_seconds  # the gateway's idle keep-alive
    assert idle >= 60  # Anki's own stall timer
    # Both names reach the gateway; other names get nothing.
    rule = resource(stack, "GatewayHosts")
    values = rule["Conditions"][0]["HostHeaderConfig"]["Values"]["Fn::If"]
    assert values[1] == [{"Ref": "SyncDomain"}, {"Ref": "PortalDomain"}]
    assert resource(stack, "HttpsListener")["DefaultActions"][0]["Type"] == "fixed-response"


def test_the_load_balancer_keeps_the_node_to_node_routes_to_the_nodes(
    stack: dict[str, Any],
) -> None:
    from gateway.cluster.internal import SEGMENT

    # docs/deploy/several-nodes.md: nodes reach each other directly (TaskFromTask); the public
    # listener answers `_cluster/` itself, before the rule that forwards both names.
    config = cfg.load(None, task_environment(stack))
    rules = {
        name: r["Properties"]
        for name, r in stack["Resources"].items()
        if r["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
    }
    blocking = [
        r for r in rules.values()
        if any(
            c["Field"] == "path-pattern"
            and config.server.path_prefix + SEGMENT + "*" in c["PathPatternConfig"]["Values"]
            for c in r["Conditions"]
        )
    ]  # fmt: skip
    assert len(blocking) == 1, rules
    (rule,) = blocking
    assert rule["ListenerArn"] == {"Ref": "HttpsListener"}
    assert rule["Priority"] < rules["GatewayHosts"]["Priority"]
    (action,) = rule["Actions"]
    assert action["Type"] == "fixed-response"
    assert action["FixedResponseConfig"]["StatusCode"] == "404"


class _Metadata(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(
            {
                "Labels": {
                    "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:123456789012:task/"
                    "anki/0123456789abcdef0123456789abcdef"
                },
                "Networks": [{"IPv4Addresses": ["10.0.1.7"]}],
            }
        ).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_entrypoint_makes_each_task_a_node_from_its_metadata(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # `python` on PATH is a stand-in that prints what the gateway would be started with.
    (tmp_path / "python").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps([sys.argv[1:], {k: v for k, v in os.environ.items()"
        " if k.startswith('GATEWAY_CLUSTER')}]))\n"
    )
    (tmp_path / "python").chmod(0o755)
    entry = container(stack)
    try:
        result = subprocess.run(
            [sys.executable, *entry["EntryPoint"][1:], *entry["Command"]],
            env={
                "PATH": f"{tmp_path}:{os.environ['PATH']}",
                "ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{server.server_address[1]}",
            },
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert entry["EntryPoint"][0] == "python"
    assert result.returncode == 0, result.stderr
    argv, env = json.loads(result.stdout)
    assert argv == ["-m", "gateway", "serve"]
    assert env == {
        "GATEWAY_CLUSTER_NODE_ID": "0123456789abcdef0123456789abcdef",
        "GATEWAY_CLUSTER_INTERNAL_URL": "http://10.0.1.7:8080/",
    }
    config = cfg.load(None, {**task_environment(stack), **env})
    assert config.cluster.node_id == "0123456789abcdef0123456789abcdef"


def test_the_task_role_allows_exactly_the_cognito_calls_the_gateway_makes(
    stack: dict[str, Any],
) -> None:
    from gateway.identity import cognito

    source = Path(cognito.__file__).read_text(encoding="utf-8")
    calls = set(re.findall(r'_call\(\s*"([a-z_]+)"', source))
    portal = "".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "gateway" / "portal").glob("*.py")
        if p.name != "standin.py"
    )
    calls |= set(re.findall(r'"((?:admin|describe)_[a-z_]+)"', portal))
    expected = {"cognito-idp:" + "".join(p.title() for p in c.split("_")) for c in calls}
    (policy,) = resource(stack, "TaskRole")["Policies"]
    granted = {
        action
        for statement in policy["PolicyDocument"]["Statement"]
        for action in statement["Action"]
        if action.startswith("cognito-idp:")
    }
    assert granted == expected
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Resource"] != "*"


def test_every_prometheus_alert_has_a_cloudwatch_alarm(stack: dict[str, Any]) -> None:
    alerts = [
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]
    text = STACK.read_text(encoding="utf-8")
    alarms = [n for n, r in stack["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    for alert in alerts:
        # Each alert is named in the comment above the alarm(s) standing for it.
        assert re.search(rf"# .*{alert}", text), alert
    for name in alarms:
        assert resource(stack, name)["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_metric_filters_name_the_loggers_and_messages_the_code_uses(
    stack: dict[str, Any],
) -> None:
    from gateway.identity import cognito
    from gateway.workers import pool

    patterns = {
        n: r["Properties"]["FilterPattern"]
        for n, r in stack["Resources"].items()
        if r["Type"] == "AWS::Logs::MetricFilter"
    }
    assert f'$.logger = "{cognito.log.name}"' in patterns["CognitoUnavailableFilter"]
    assert f'$.logger = "{cognito.log.name}"' in patterns["CognitoMisconfiguredFilter"]
    assert f'$.logger = "{pool.log.name}"' in patterns["WorkerCrashFilter"]
    assert f'$.logger = "{pool.log.name}"' in patterns["WorkerMemoryKillFilter"]
    pool_source = Path(pool.__file__).read_text(encoding="utf-8")
    assert 'log.info("stopping worker: %s"' in pool_source
    assert 'f"process exited with {' in pool_source
    assert '"worker killed at its memory limit"' in pool_source
    assert 'f"all {self._max_workers} workers are busy"' in pool_source
