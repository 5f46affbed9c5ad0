"""3. Small-request overhead: `sync/meta` latency and throughput, 1 and 16 concurrent clients.

Three fronts to one and the same worker (the account's stock server behind the gateway):
- direct: the worker's own port;
- nginx: Debian's nginx-light as a plain streaming reverse proxy in front of the worker (one
  worker process, upstream connections kept alive as the gateway's worker link keeps them;
  until 2026-12-07 a fresh upstream connection per request);
- floor: bench/floor_proc.py, aiohttp's server and the gateway's worker link in one process
  with none of the gateway's checks: the least a proxy built on the gateway's parts costs (what
  the gateway costs above it is its checks; what it costs above direct, a second HTTP stack in
  Python); floor_cores: the same in one process per core on one port (SO_REUSEPORT), as `serve`
  runs the gateway;
- gateway: the gateway in one process (`server.processes: 1`), which also looks the host key
  up and leases the worker;
- gateway_cores: the gateway as `serve` runs it by default, one process per core
  (gateway/processes/), on a data folder of its own, so with a worker of its own, started by one
  of its processes as in a deployment (a connection then reaches that process or the other,
  which borrows the worker); its added p50 is taken against `direct_cores`, that worker's own
  port, measured in the same rotation. (Until 2026-12-06 this front shared `gateway`'s data
  folder, so every one of its processes borrowed a worker another gateway ran: a setup no
  `serve` deployment has, about 0.1 ms slower per request.)

Each client sends back to back on a keep-alive connection (as the Anki client's connection
pool does). Fronts are measured in rotating order within each run. The gateway's added p50 is
its p50 minus the direct p50 in the same run; the target is judged at 1 client, where latency
is the cost of one request (at 16, p50 is mostly queueing: 16 / throughput).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench import httpload, procs, stats
from bench.cognito import PASSWORD
from bench.context import Context

ID = 3
TITLE = "Small-request overhead: sync/meta p50 and throughput"
TARGET = (
    "gateway adds <= 1 ms to the p50 (1 client), one process and one per core; "
    "ratio to nginx reported"
)
LIMIT_MS = 1.0
USER = "metauser"
#: The direct front each front's added p50 and throughput ratio are taken against.
BASELINE = {"gateway_cores": "direct_cores"}


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    pool = ctx.pool([USER])
    gateway = ctx.gateway("m3", pool)
    cores = len(os.sched_getaffinity(0))
    several = None
    nginx = None
    floor = floor_cores = None
    notes = []
    try:
        key = asyncio.run(httpload.login(gateway.port, USER, PASSWORD))
        asyncio.run(
            httpload.Connection(gateway.port).send(
                httpload.meta_request(gateway.port, key), keep_alive=False
            )
        )
        worker_port = gateway.stats()["workers"][USER]["port"]
        fronts = {"direct": worker_port, "gateway": gateway.port}
        keys = {"direct": key, "gateway": key}
        if cores > 1:
            several = procs.Gateway(
                ctx.folder("m3-cores", "gateway-data"),
                pool.settings(),
                ctx.log("m3-gateway-cores.log"),
                processes=cores,
            )
            keys["gateway_cores"] = keys["direct_cores"] = asyncio.run(
                httpload.login(several.port, USER, PASSWORD)
            )
            asyncio.run(
                httpload.Connection(several.port).send(
                    httpload.meta_request(several.port, keys["gateway_cores"]), keep_alive=False
                )
            )
            fronts["gateway_cores"] = several.port
            fronts["direct_cores"] = several.stats()["workers"][USER]["port"]
        floor = procs.floor(worker_port, ctx.log("m3-floor.log"))
        fronts["floor"] = floor.port
        keys["floor"] = key
        if cores > 1:
            floor_cores = procs.floor(worker_port, ctx.log("m3-floor-cores.log"), cores)
            fronts["floor_cores"] = floor_cores.port
            keys["floor_cores"] = key
        try:
            nginx = procs.nginx(worker_port, ctx.folder("m3", "nginx"))
            fronts["nginx"] = nginx.port
            keys["nginx"] = key
        except FileNotFoundError as exc:
            notes.append(f"nginx comparison skipped: {exc}")
            print(f"  {notes[-1]}")
        names = list(fronts)
        per_run: dict[int, dict[str, list[dict[str, float]]]] = {
            c: {n: [] for n in names} for c in s.concurrencies
        }
        for i in range(s.load_runs):
            for concurrency in s.concurrencies:
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    port = fronts[name]
                    result = asyncio.run(
                        httpload.closed_loop(
                            port,
                            httpload.meta_request(port, keys[name]),
                            concurrency=concurrency,
                            duration=s.load_duration_s,
                            max_requests=s.load_max_requests,
                            keep_alive=True,
                        )
                    )
                    summary = stats.latency(result.latencies_ms)
                    summary["throughput"] = result.throughput
                    summary["errors"] = float(result.errors)
                    per_run[concurrency][name].append(summary)
                line = ", ".join(
                    f"{n} p50 {per_run[concurrency][n][-1]['p50']:.3f} ms "
                    f"{per_run[concurrency][n][-1]['throughput']:.0f}/s"
                    for n in names
                )
                print(f"  run {i + 1}, {concurrency} client(s): {line}")
    finally:
        for each in (floor, floor_cores):
            if each is not None:
                each.stop()
        if nginx is not None:
            nginx.stop()
        if several is not None:
            several.stop()
        gateway.stop()

    figures: dict[str, Any] = {}
    for concurrency, by_front in per_run.items():
        block: dict[str, Any] = {n: stats.over_runs(runs) for n, runs in by_front.items()}
        for name in names:
            if name.startswith("direct"):
                continue
            base = BASELINE.get(name, "direct")  # the worker this front sends to
            base_p50 = [r["p50"] for r in by_front[base]]
            added = [r["p50"] - d for r, d in zip(by_front[name], base_p50, strict=True)]
            block[f"{name}_added_p50_ms"] = stats.spread(added)
            block[f"{name}_throughput_vs_direct"] = stats.ratio(
                block[name]["throughput"]["median"], block[base]["throughput"]["median"]
            )
        if "nginx" in by_front:
            block["gateway_to_nginx_added_p50"] = stats.ratio(
                block["gateway_added_p50_ms"]["median"], block["nginx_added_p50_ms"]["median"]
            )
            block["gateway_to_nginx_p50"] = stats.ratio(
                block["gateway"]["p50"]["median"], block["nginx"]["p50"]["median"]
            )
            block["gateway_to_nginx_throughput"] = stats.ratio(
                block["gateway"]["throughput"]["median"], block["nginx"]["throughput"]["median"]
            )
        figures[f"c{concurrency}"] = block
    single = figures[f"c{s.concurrencies[0]}"]
    added = single["gateway_added_p50_ms"]["median"]
    summary = f"gateway adds {added:.3f} ms to the p50 at 1 client"
    last = figures[f"c{s.concurrencies[-1]}"]
    if "gateway_cores" in fronts:
        summary += (
            f"; {cores} processes add {single['gateway_cores_added_p50_ms']['median']:.3f} ms, "
            f"{s.concurrencies[-1]} clients: "
            f"{last['gateway_cores_throughput_vs_direct']:.2f}x direct throughput "
            f"(one process {last['gateway_throughput_vs_direct']:.2f}x)"
        )
    summary += (
        f"; floor (aiohttp + worker link, no checks) adds "
        f"{single['floor_added_p50_ms']['median']:.3f} ms, "
        f"{last['floor_throughput_vs_direct']:.2f}x direct at {s.concurrencies[-1]} clients"
    )
    if "floor_cores" in last:
        summary += f" ({cores} processes {last['floor_cores_throughput_vs_direct']:.2f}x)"
    if "nginx" in fronts:
        summary += f" (nginx adds {single['nginx_added_p50_ms']['median']:.3f} ms)"
    else:
        summary += " (nginx not installed: no nginx comparison)"
    return {
        "figures": figures,
        "processes": cores,
        # Judged as deployed too: `serve` runs one process per core by default.
        "met": added <= LIMIT_MS
        and (
            "gateway_cores" not in fronts
            or single["gateway_cores_added_p50_ms"]["median"] <= LIMIT_MS
        ),
        "notes": notes,
        "summary": summary,
    }
