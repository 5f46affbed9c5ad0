"""2. One user's `sync/meta` latency while another user full-uploads in a loop.

Setups, interleaved run by run:
- stock: one stock server holding both users (SYNC_USER1, SYNC_USER2), the upload framed as
  the real client frames it (4 KiB HTTP chunks). The server reads such a body slowly, and
  outside its global lock, so the lock is held for a small part of each upload;
- stock, re-framed: the same server, the upload arriving in 64 KiB chunks, as it does behind
  a TLS-terminating reverse proxy (nginx, Caddy, or the gateway) that re-frames bodies. Uploads
  then arrive fast and the lock is held for most of the time;
- gateway: both users behind the gateway, each with a worker of its own; the upload framed as
  the client frames it (the gateway re-frames it on the way to the worker).

The uploader is a separate process (bench/uploader.py) sending the pre-compressed collection,
back to back; the prober sends one `sync/meta` every 10 ms on a keep-alive connection, for a
fixed window, and records each latency. The same probing without any upload ("idle") is
reported beside it: on this machine a request that finds processes asleep pays their wake-up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import httpload, procs, stats
from bench.cognito import PASSWORD
from bench.context import Context

ID = 2
TITLE = "sync/meta latency of one user while another full-uploads in a loop"
TARGET = "p90 <= 5 ms through the gateway (one stock server: p90 ~ 300 ms)"
LIMIT_MS = 5.0
UPLOADER, PROBER = "uploader", "prober"
REFRAMED = 64 * 1024
#: setup → (front, upload chunk size)
SETUPS = {
    "stock": ("stock", httpload.CLIENT_CHUNK),
    "stock_reframed": ("stock", REFRAMED),
    "gateway": ("gateway", httpload.CLIENT_CHUNK),
}
LABELS = {
    "stock": "one stock server, client framing",
    "stock_reframed": "one stock server, re-framed upload",
    "gateway": "gateway, client framing",
    "stock_idle": "one stock server, no upload",
    "gateway_idle": "gateway, no upload",
}


async def probe(port: int, key: str, window: float, interval: float) -> dict[str, Any]:
    request = httpload.meta_request(port, key)
    conn = httpload.Connection(port)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + window
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await conn.send(request, keep_alive=True)
                ok = response.status == 200
            except (OSError, httpload.ProtocolError, asyncio.IncompleteReadError, TimeoutError):
                ok = False
            took = (time.perf_counter() - started) * 1000
            if ok:
                latencies.append(took)
            else:
                errors += 1
            await asyncio.sleep(interval)
    finally:
        await conn.close()
    return {"latencies_ms": latencies, "errors": errors}


def with_uploads(
    ctx: Context, port: int, keys: dict[str, str], body: Path, chunk: int, tag: str
) -> dict[str, Any]:
    s = ctx.settings
    result_file = ctx.work / "m2" / f"uploader-{tag}.json"
    uploader = subprocess.Popen(
        [
            sys.executable, "-m", "bench.uploader",
            "--port", str(port), "--key", keys[UPLOADER], "--body", str(body),
            "--chunk", str(chunk), "--duration", str(s.contention_window_s + 0.5),
            "--out", str(result_file),
        ],
        cwd=procs.REPO,
        env=procs.clean_env(),
    )  # fmt: skip
    try:
        time.sleep(0.5)  # the first upload is under way
        probed = asyncio.run(probe(port, keys[PROBER], s.contention_window_s, s.probe_interval_s))
        uploader.wait(timeout=180)
    finally:
        if uploader.poll() is None:
            uploader.kill()
            uploader.wait()
    uploads = json.loads(result_file.read_text())
    summary = stats.latency(probed["latencies_ms"])
    summary["errors"] = float(probed["errors"])
    summary["uploads"] = float(uploads["uploads"])
    summary["upload_errors"] = float(
        uploads["errors"] + sum(v for k, v in uploads["statuses"].items() if k != "200")
    )
    summary["upload_s"] = stats.percentile(uploads["seconds"], 50)
    return {"summary": summary, "samples": probed["latencies_ms"]}


def idle(ctx: Context, port: int, keys: dict[str, str]) -> dict[str, Any]:
    s = ctx.settings
    probed = asyncio.run(probe(port, keys[PROBER], s.contention_idle_s, s.probe_interval_s))
    summary = stats.latency(probed["latencies_ms"])
    summary["errors"] = float(probed["errors"])
    return {"summary": summary, "samples": probed["latencies_ms"]}


def warm_up(port: int, keys: dict[str, str], body: bytes, name: str) -> None:
    """Both collections exist on the server and both workers run before anything is timed."""
    one = httpload.upload_request(f"127.0.0.1:{port}", keys[UPLOADER], body)
    answer = asyncio.run(httpload.Connection(port).send(one, keep_alive=False))
    assert answer.status == 200, f"{name}: warm-up upload answered {answer.status}"
    meta = httpload.meta_request(port, keys[PROBER])
    answer = asyncio.run(httpload.Connection(port).send(meta, keep_alive=False))
    assert answer.status == 200, f"{name}: warm-up meta answered {answer.status}"


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    body = ctx.work / "m2" / "collection.zst"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_bytes(httpload.compress(ctx.collection().read_bytes()))
    pool = ctx.pool([UPLOADER, PROBER])
    gateway = ctx.gateway("m2", pool)
    users = [(UPLOADER, "pw-" + UPLOADER), (PROBER, "pw-" + PROBER)]
    stock = procs.stock_server(users, ctx.folder("m2", "stock-base"), ctx.log("m2-stock.log"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in LABELS}
    try:
        fronts = {
            "stock": (stock.port, {u: procs.host_key(u, p) for u, p in users}),
            "gateway": (
                gateway.port,
                {u: asyncio.run(httpload.login(gateway.port, u, PASSWORD)) for u, _ in users},
            ),
        }
        for name, (port, keys) in fronts.items():
            warm_up(port, keys, body.read_bytes(), name)
        names = list(SETUPS)
        for i in range(s.contention_runs):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                front, chunk = SETUPS[name]
                port, keys = fronts[front]
                runs[name].append(with_uploads(ctx, port, keys, body, chunk, f"{name}-{i}"))
            for front in ("stock", "gateway"):
                runs[f"{front}_idle"].append(idle(ctx, *fronts[front]))
            print(
                f"  run {i + 1}: "
                + "; ".join(
                    f"{name} p50 {runs[name][-1]['summary']['p50']:.2f} / p90 "
                    f"{runs[name][-1]['summary']['p90']:.2f} ms"
                    + (
                        f" ({runs[name][-1]['summary']['uploads']:.0f} uploads)"
                        if "uploads" in runs[name][-1]["summary"]
                        else ""
                    )
                    for name in runs
                )
            )
    finally:
        gateway.stop()
        stock.stop()

    figures: dict[str, Any] = {
        name: stats.over_runs([r["summary"] for r in rs]) for name, rs in runs.items()
    }
    gw_p90 = figures["gateway"]["p90"]["median"]
    figures["p90_ratio_stock_reframed_to_gateway"] = stats.ratio(
        figures["stock_reframed"]["p90"]["median"], gw_p90
    )
    figures["p90_ratio_stock_to_gateway"] = stats.ratio(figures["stock"]["p90"]["median"], gw_p90)
    return {
        "figures": figures,
        "labels": LABELS,
        "met": gw_p90 <= LIMIT_MS and figures["gateway"]["errors"]["max"] == 0,
        # All samples of the median run of each setup, for the plot.
        "samples_ms": {
            name: [round(x, 3) for x in _median_run(rs)["samples"]] for name, rs in runs.items()
        },
        "summary": (
            f"p90 {gw_p90:.1f} ms through the gateway vs {figures['stock']['p90']['median']:.1f} "
            f"ms (client framing) and {figures['stock_reframed']['p90']['median']:.0f} ms "
            "(re-framed upload) on one stock server"
        ),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["summary"]["p90"])
    return ordered[len(ordered) // 2]
