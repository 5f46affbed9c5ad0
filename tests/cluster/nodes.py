"""Gateway nodes as separate processes on loopback, and a moto server (Cognito, DynamoDB).

Each node is `python -m gateway serve`, configured through GATEWAY_* variables as in
production; the stock sync servers it starts die with it (PR_SET_PDEATHSIG), so a SIGKILLed
node takes its workers along, as a crashed machine would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.local import standin
from tests.ankiclient import Client
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cluster-test-secret-0123456789abcdef"


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Moto:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_moto() -> Moto:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", 30, process)
    return Moto(url, process)


@dataclass
class Node:
    id: str
    port: int
    data_dir: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "gateway", "serve"],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_http(self.url + "health", 60, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        """One sample from the node's /metrics (its metrics listener must be on)."""
        from prometheus_client.parser import text_string_to_metric_families

        port = self.env["GATEWAY_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # noqa: S310
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


TABLE = "anki-gateway-test"


@dataclass
class Cluster:
    moto: Moto
    pool_id: str
    client_id: str
    #: "dynamodb" (the table in moto) or "sqlite" (files in a shared data folder)
    backend: str = "dynamodb"
    shared: Path | None = None
    nodes: list[Node] = field(default_factory=list)

    def heartbeat_end(self, node_id: str) -> float:
        """When the node's heartbeat item says it ends (Unix seconds)."""
        if self.backend == "sqlite":
            assert self.shared is not None
            with sqlite3.connect(self.shared / "cluster.sqlite3") as db:
                (item,) = db.execute(
                    "SELECT item FROM items WHERE pk = ?", ("node#" + node_id,)
                ).fetchone()
            return float(json.loads(item)["expires"])
        found = dynamodb(self.moto).get_item(
            TableName=TABLE, Key={"pk": {"S": "node#" + node_id}}, ConsistentRead=True
        )
        return float(found["Item"]["expires"]["N"])

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def owners(self) -> dict[str, str]:
        """sub → owner node id, read straight from the directory's store."""
        if self.backend == "sqlite":
            assert self.shared is not None
            with sqlite3.connect(self.shared / "cluster.sqlite3") as db:
                rows = db.execute("SELECT pk, item FROM items WHERE pk LIKE 'owner#%'").fetchall()
            return {pk.removeprefix("owner#"): json.loads(item)["node"] for pk, item in rows}
        client = dynamodb(self.moto)
        found: dict[str, str] = {}
        for page in client.get_paginator("scan").paginate(TableName=TABLE):
            for item in page["Items"]:
                if item["pk"]["S"].startswith("owner#"):
                    found[item["pk"]["S"].removeprefix("owner#")] = item["node"]["S"]
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def dynamodb(moto: Moto) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        endpoint_url=moto.url,
        aws_access_key_id=standin.DUMMY_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=standin.DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
    )


def create_table(moto: Moto) -> None:
    from gateway.registry.dynamo import create_table as create

    create(dynamodb(moto), TABLE)


def gateway_env(
    moto: Moto, pool_id: str, client_id: str, port: int, data_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of a `python -m gateway serve` subprocess on 127.0.0.1:`port` against
    moto's Cognito (stand-in mode), with `extra` settings on top; none of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "AWS_"))}
    env.update(standin.DUMMY_AWS)
    env.update(
        {
            "AWS_DEFAULT_REGION": "eu-west-1",
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_SECRET": SECRET,
            "GATEWAY_COGNITO_USER_POOL_ID": pool_id,
            "GATEWAY_COGNITO_CLIENT_ID": client_id,
            "GATEWAY_COGNITO_ENDPOINT_URL": moto.url,
            "GATEWAY_COGNITO_LOCAL_STAND_IN": "true",
            "GATEWAY_SERVER_HOST": "127.0.0.1",
            "GATEWAY_SERVER_PORT": str(port),
            "GATEWAY_SERVER_MIN_FREE_DISK_MEGS": "0",
            **extra,
        }
    )
    return env


def node_env(
    moto: Moto,
    pool_id: str,
    client_id: str,
    node_id: str,
    port: int,
    data_dir: Path,
    storage: str,
    backend: str = "dynamodb",
    **extra: str,
) -> dict[str, str]:
    return gateway_env(
        moto,
        pool_id,
        client_id,
        port,
        data_dir,
        **{
            "GATEWAY_METRICS_ENABLED": "false",
            "GATEWAY_LOGGING_FORMAT": "text",
            "GATEWAY_CLUSTER_NODE_ID": node_id,
            "GATEWAY_CLUSTER_INTERNAL_URL": f"http://127.0.0.1:{port}/",
            "GATEWAY_CLUSTER_STORAGE": storage,
            "GATEWAY_CLUSTER_LEASE_SECONDS": "4",
            "GATEWAY_CLUSTER_HEARTBEAT_SECONDS": "1",
            **(
                {
                    "GATEWAY_REGISTRY_BACKEND": "dynamodb",
                    "GATEWAY_REGISTRY_TABLE": TABLE,
                    "GATEWAY_REGISTRY_ENDPOINT_URL": moto.url,
                    "GATEWAY_REGISTRY_REGION": "eu-west-1",
                }
                if backend == "dynamodb"
                else {}
            ),
            **extra,
        },
    )


def users(n: int) -> list[standin.LocalUser]:
    return [standin.new_user(f"user{i}@example.com") for i in range(n)]


def start_cluster(
    tmp_path: Path,
    storage: str,
    people: list[standin.LocalUser],
    *,
    public: bool = False,
    backend: str = "dynamodb",
    count: int = 3,
    metrics: bool = False,
) -> Cluster:
    moto = start_moto()
    pool_id, client_id, _ = standin.bootstrap(moto.url, people)
    shared = tmp_path / "shared"
    shared.mkdir()
    cluster = Cluster(moto, pool_id, client_id, backend, shared)
    if backend == "dynamodb":
        create_table(moto)
    for i in range(count):
        port = free_port()
        data = shared if storage == "shared" else tmp_path / f"node{i}"
        data.mkdir(exist_ok=True)
        if backend == "sqlite" and storage != "shared":
            # One host without DynamoDB: per-node folders, registry and directory files shared.
            for name in ("registry.sqlite3", "cluster.sqlite3"):
                (data / name).symlink_to(shared / name)
        extra = {"GATEWAY_CLUSTER_PUBLIC_URL": f"http://127.0.0.1:{port}/"} if public else {}
        if metrics:
            extra |= {"GATEWAY_METRICS_ENABLED": "true", "GATEWAY_METRICS_PORT": str(free_port())}
        env = node_env(moto, pool_id, client_id, f"n{i}", port, data, storage, backend, **extra)
        cluster.nodes.append(Node(f"n{i}", port, data, env, tmp_path / f"n{i}.log"))
    try:
        for node in cluster.nodes:
            node.start()
    except BaseException:
        cluster.stop()
        moto.stop()
        raise
    return cluster


def fake_aws(env: pytest.MonkeyPatch) -> None:
    """What conftest's per-test fixture does, for the module-wide clusters: never real AWS."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.delenv(name, raising=False)
    for name, value in standin.DUMMY_AWS.items():
        env.setenv(name, value)


def module_cluster(
    tmp_path_factory, storage: str, n_users: int
) -> Iterator[tuple[Cluster, list[standin.LocalUser]]]:
    people = users(n_users)
    with pytest.MonkeyPatch.context() as env:
        fake_aws(env)
        cluster = start_cluster(tmp_path_factory.mktemp(storage), storage, people)
        yield cluster, people
    cluster.stop()
    cluster.moto.stop()


def owner_node(cluster: Cluster, sub: str) -> Node:
    owner_id = cluster.owners()[sub]
    return next(n for n in cluster.nodes if n.id == owner_id)


def device(tmp_path: Path, name: str) -> Client:
    return Client(tmp_path / "clients" / name)


def synced(tmp_path: Path, name: str, user: standin.LocalUser, node: Node, note: str) -> Client:
    """A device logged in through `node` that added `note` and synced it."""
    client = device(tmp_path, name)
    client.login(user.email, user.password, node.url)
    client.add_note(note)
    client.sync()
    return client


def through(client: Client, node: Node) -> Client:
    assert client.auth is not None
    client.auth.endpoint = node.url
    return client
