"""6. Memory: the idle gateway with many accounts and cached logins; each idle worker.

Gateway: a fresh gateway process is read idle (after a full garbage collection) before and
after the registry gets N accounts, each with a host key and a cached login, made by the calls
a real login makes (bench/gateway_proc.py, /prefill). RSS is what the target is about; PSS is
reported beside it.

Workers: for every available start command, K stock servers (one user each, as the gateway
starts them) run side by side; each is read once idle. PSS charges shared pages (the Python
interpreter, the `anki` library) to the processes sharing them, so it is the fair "private
memory per worker"; USS (pages only this process has) is its lower bound.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from typing import Any

from bench import procs, stats
from bench.context import Context

ID = 6
TITLE = "Memory: idle gateway and idle workers"
TARGET = "gateway RSS <= 100 MB with 10,000 accounts and 10,000 cached logins; per-worker PSS"
LIMIT_MIB = 100 * 1e6 / 2**20  # 100 MB = 95.4 MiB


def gateway_memory(ctx: Context, run: int) -> dict[str, float]:
    pool = ctx.pool()
    gateway = ctx.gateway(f"m6-{run}", pool)
    try:
        gateway.control("gc")
        time.sleep(ctx.settings.memory_settle_s)
        before = procs.memory(gateway.pid)
        filled = gateway.control("prefill", n=ctx.settings.registry_accounts)
        gateway.control("gc")
        time.sleep(ctx.settings.memory_settle_s)
        after = procs.memory(gateway.pid)
        stats_now = gateway.stats()
        assert stats_now["registry_accounts"] == ctx.settings.registry_accounts
        assert stats_now["cache_entries"] == ctx.settings.registry_accounts
    finally:
        gateway.stop()
        shutil.rmtree(ctx.work / f"m6-{run}", ignore_errors=True)
    n = ctx.settings.registry_accounts
    return {
        "idle_rss_mib": before["rss_mib"],
        "idle_pss_mib": before["pss_mib"],
        "filled_rss_mib": after["rss_mib"],
        "filled_pss_mib": after["pss_mib"],
        "bytes_per_account": (after["rss_mib"] - before["rss_mib"]) * 2**20 / n,
        "prefill_s": float(filled["s"]),
    }


def worker_memory(ctx: Context, command: list[str], run: int, tag: str) -> list[dict[str, float]]:
    servers = []
    try:
        for k in range(ctx.settings.workers_per_command):
            base = ctx.folder(f"m6-workers-{run}", tag, str(k))
            servers.append(
                procs.stock_server(
                    [(f"user{k}", "pw")], base, ctx.log(f"m6-{tag}-{k}.log"), command=command
                )
            )
        time.sleep(ctx.settings.memory_settle_s)
        return [procs.memory(server.pid) for server in servers]
    finally:
        for server in servers:
            server.stop()


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    gateway_runs = []
    workers: dict[str, list[dict[str, float]]] = {}
    notes = []
    available = {}
    for i, (name, command) in enumerate(procs.WORKER_COMMANDS.items()):
        if shutil.which(command[0]) is None:
            notes.append(f"{name}: not measured ({command[0]} is not installed here)")
            continue
        available[name] = (command, f"cmd{i}")
        workers[name] = []
    for i in range(s.memory_runs):
        gateway_runs.append(gateway_memory(ctx, i))
        for name, (command, tag) in available.items():
            workers[name].extend(worker_memory(ctx, command, i, tag))
        line = "; ".join(
            f"{name} PSS {stats.percentile([w['pss_mib'] for w in ws], 50):.1f}"
            for name, ws in workers.items()
        )
        print(
            f"  run {i + 1}: gateway RSS {gateway_runs[-1]['idle_rss_mib']:.1f} MiB idle, "
            f"{gateway_runs[-1]['filled_rss_mib']:.1f} MiB with {s.registry_accounts} accounts; "
            f"{line}"
        )
    figures: dict[str, Any] = {
        "gateway": stats.over_runs(gateway_runs),
        "accounts": float(s.registry_accounts),
        "workers_side_by_side": float(s.workers_per_command),
        "workers": {},
    }
    for name, readings in workers.items():
        figures["workers"][name] = stats.over_runs(readings)
    best = min(
        figures["workers"], key=lambda n: figures["workers"][n]["pss_mib"]["median"], default=""
    )
    filled = figures["gateway"]["filled_rss_mib"]["median"]
    return {
        "figures": figures,
        "met": filled <= LIMIT_MIB,
        "notes": notes,
        "default_command": best,
        "commands": {
            n: shlex.join(["python", *c[1:]] if c[0] == sys.executable else c)
            for n, (c, _) in available.items()
        },
        "summary": (
            f"gateway {filled:.1f} MiB RSS with {s.registry_accounts} accounts and cached "
            f"logins; idle worker PSS "
            + ", ".join(
                f"{figures['workers'][n]['pss_mib']['median']:.1f} MiB ({n})"
                for n in figures["workers"]
            )
        ),
    }
