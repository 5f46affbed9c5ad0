"""9. One node and three: the same `sync/meta` load through a single gateway and a cluster.

Issue 12. Three setups, all with the registry on DynamoDB (the moto server that also stands in
for Cognito), so only the cluster differs:
- single: one gateway, no cluster;
- 1 node: the same with `cluster.node_id` set (heartbeats, owner lookups: the cluster's own cost);
- 3 nodes: three gateways; each request goes to a node chosen at random, as a load balancer
  without stickiness would send it, so about two in three are forwarded to the owner node.

`users` accounts log in first (in the cluster they are placed on the least loaded node). Then
`clients` connections send `sync/meta` back to back, each for its own user, for
`load_duration_s`, `load_runs` times with the setups in rotating order. On one machine every
node, every worker and moto share the same cores: this measures what forwarding costs, not
what more machines give (docs/cluster-model.md works that out).

Run it alone: `python -m bench --only 9` (it is not part of the default set).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import boto3

from bench import httpload, procs, stats
from bench.cognito import PASSWORD
from bench.context import Context
from gateway.registry.dynamo import create_table

ID = 9
TITLE = "One node and three: sync/meta through a single gateway and a cluster"
TARGET = "no errors; throughput and p50 of 1 and 3 nodes reported (same machine)"
TABLE = "bench-cluster"


def start(ctx: Context, name: str, pool: Any, nodes: int) -> list[procs.Gateway]:
    registry = {
        "registry_backend": "dynamodb",
        "registry_table": f"{TABLE}-{name}",
        "registry_endpoint_url": ctx.cognito_endpoint,
        "registry_region": "eu-west-1",
        "secret": "bench-cluster-secret-0123456789",
        "logging_level": "WARNING",
        "metrics_enabled": "false",
        "server_min_free_disk_megs": "0",
    }
    create_table(
        boto3.client(
            "dynamodb",
            region_name="eu-west-1",
            endpoint_url=ctx.cognito_endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 - moto
        ),
        registry["registry_table"],
    )
    shared = ctx.folder(f"m9-{name}", "shared")
    gateways = []
    for i in range(nodes):
        port = procs.free_port()
        cluster = (
            {
                "cluster_node_id": f"n{i}",
                "cluster_internal_url": f"http://127.0.0.1:{port}/",
                "cluster_storage": "shared",
            }
            if name != "single"
            else {}
        )
        log = ctx.log(f"m9-{name}-{i}.log")
        gateways.append(
            procs.Gateway(shared, pool.settings(), log, port=port, **registry, **cluster)
        )
    return gateways


async def load(
    ports: list[int], keys: list[str], *, clients: int, duration: float, seed: int
) -> httpload.LoadResult:
    """`clients` clients, client i for user i % len(keys), each request to a random port."""
    rng = random.Random(seed)  # noqa: S311 - load pattern
    result = httpload.LoadResult()
    conns = [{p: httpload.Connection(p) for p in ports} for _ in range(clients)]
    requests = [
        {p: httpload.meta_request(p, keys[i % len(keys)]) for p in ports} for i in range(clients)
    ]
    for i in range(clients):  # warm up: every connection open, every worker running
        for p in ports:
            await conns[i][p].send(requests[i][p], keep_alive=True)
    started = time.perf_counter()
    deadline = started + duration

    async def client(i: int) -> None:
        while time.perf_counter() < deadline:
            port = rng.choice(ports)
            t0 = time.perf_counter_ns()
            try:
                response = await conns[i][port].send(requests[i][port], keep_alive=True)
            except (OSError, httpload.ProtocolError, asyncio.IncompleteReadError, TimeoutError):
                result.errors += 1
                continue
            result.statuses[response.status] = result.statuses.get(response.status, 0) + 1
            if response.status == 200:
                result.latencies_ms.append((time.perf_counter_ns() - t0) / 1e6)
            else:
                result.errors += 1

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        result.elapsed_s = time.perf_counter() - started
        for per_port in conns:
            for conn in per_port.values():
                await conn.close()
    return result


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    users = [f"cluster{i:02d}" for i in range(s.cluster_users)]
    pool = ctx.pool(users)
    setups = {"single": 1, "1 node": 1, "3 nodes": 3}
    running: dict[str, list[procs.Gateway]] = {}
    keys: dict[str, list[str]] = {}
    per_run: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
    try:
        for name, count in setups.items():
            running[name] = start(ctx, name.replace(" ", "-"), pool, count)
            first = running[name][0].port
            keys[name] = [asyncio.run(httpload.login(first, u, PASSWORD)) for u in users]
        names = list(setups)
        for i in range(s.load_runs):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                result = asyncio.run(
                    load(
                        [g.port for g in running[name]],
                        keys[name],
                        clients=s.cluster_clients,
                        duration=s.load_duration_s,
                        seed=i,
                    )
                )
                summary = stats.latency(result.latencies_ms)
                summary["throughput"] = result.throughput
                summary["errors"] = float(result.errors)
                per_run[name].append(summary)
            print(
                f"  run {i + 1}: "
                + ", ".join(
                    f"{n} {per_run[n][-1]['throughput']:.0f}/s p50 {per_run[n][-1]['p50']:.2f} ms"
                    for n in names
                )
            )
    finally:
        for gateways in running.values():
            for gateway in gateways:
                gateway.stop()
    figures: dict[str, Any] = {n: stats.over_runs(runs) for n, runs in per_run.items()}
    figures["users"] = len(users)
    figures["clients"] = s.cluster_clients
    single = figures["single"]["throughput"]["median"]
    for name in ("1 node", "3 nodes"):
        figures[f"{name} throughput vs single"] = stats.ratio(
            figures[name]["throughput"]["median"], single
        )
    errors = sum(r["errors"] for runs in per_run.values() for r in runs)
    return {
        "figures": figures,
        "met": errors == 0,
        "summary": (
            f"{single:.0f} req/s single, "
            f"{figures['1 node']['throughput']['median']:.0f} on 1 cluster node, "
            f"{figures['3 nodes']['throughput']['median']:.0f} through 3 nodes on the same "
            f"{os.cpu_count()} cores; {errors:.0f} errors"
        ),
        "notes": [
            "All nodes, workers and moto share one machine's cores: three nodes cannot be faster "
            "here, and forwarding costs a second gateway hop for two requests in three."
        ],
    }
