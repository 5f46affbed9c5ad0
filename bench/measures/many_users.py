"""7. Many users: 20 accounts syncing at once (normal syncs), total time and failures.

Twenty real `anki` clients (threads; the Rust backend releases the GIL) each hold a collection
that is already on the server. In each run every client adds a few notes and a small media
file, then all start a normal sync (collection, then media) at the same moment; the figure is
the time until the last one is done, and any sync that raised or did not end as a normal sync
is a failure. Two setups, interleaved: the gateway (a worker per account) and one stock server
holding all twenty users.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench import procs, stats
from bench.client import Client, Required
from bench.cognito import PASSWORD
from bench.context import Context

ID = 7
TITLE = "Many users syncing at once"
TARGET = "zero failures; time ratio gateway / one stock server reported"
NORMAL = (Required.NO_CHANGES, Required.NORMAL_SYNC)


def sync_all(clients: list[Client], round_no: int, notes: int) -> dict[str, float]:
    for n, client in enumerate(clients):
        client.add_notes([f"round {round_no} client {n} note {k}" for k in range(notes)])
        client.add_media(f"r{round_no}-c{n}.txt", f"media {round_no} {n}".encode() * 50)
    barrier = threading.Barrier(len(clients) + 1, timeout=60)
    failures: list[str] = []
    finished: list[float] = []

    def work(client: Client) -> None:
        try:
            barrier.wait()
            required = client.sync()
            if required not in NORMAL:
                failures.append(f"server required {required}")
        except Exception as exc:  # any failure is counted, none may stop the run
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            finished.append(time.perf_counter())

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join(300)
    if any(t.is_alive() for t in threads):
        failures.append("a sync did not finish within 300 s")
    for f in failures[:3]:
        print(f"    failure: {f}")
    return {
        "total_s": (max(finished) if finished else time.perf_counter()) - started,
        "failures": float(len(failures)),
    }


def setup_clients(ctx: Context, name: str, users: list[str], endpoint: str, passwords: dict):
    clients = []
    for user in users:
        client = Client(ctx.work / "m7" / name / user)
        client.add_notes([f"{user} first note {k}" for k in range(20)])
        client.login(user, passwords[user], endpoint)
        client.sync()  # full upload: from here on, syncs are normal
        clients.append(client)
    return clients


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    users = [f"many{i:02d}" for i in range(s.many_users)]
    pool = ctx.pool(users)
    gateway = ctx.gateway("m7", pool)
    stock_passwords = {u: f"pw-{u}" for u in users}
    stock = procs.stock_server(
        [(u, stock_passwords[u]) for u in users],
        ctx.folder("m7", "stock-base"),
        ctx.log("m7-stock.log"),
    )
    setups: dict[str, list[Client]] = {}
    runs: dict[str, list[dict[str, float]]] = {"gateway": [], "stock": []}
    try:
        setups["gateway"] = setup_clients(
            ctx, "gateway", users, gateway.url, dict.fromkeys(users, PASSWORD)
        )
        setups["stock"] = setup_clients(
            ctx, "stock", users, f"http://127.0.0.1:{stock.port}/", stock_passwords
        )
        for i in range(s.many_runs):
            order = ("stock", "gateway") if i % 2 == 0 else ("gateway", "stock")
            for name in order:
                runs[name].append(sync_all(setups[name], i, s.notes_per_sync))
            print(
                f"  run {i + 1}: gateway {runs['gateway'][-1]['total_s']:.2f} s "
                f"({runs['gateway'][-1]['failures']:.0f} failed), one stock server "
                f"{runs['stock'][-1]['total_s']:.2f} s ({runs['stock'][-1]['failures']:.0f} failed)"
            )
    finally:
        for clients in setups.values():
            for client in clients:
                client.close()
        gateway.stop()
        stock.stop()
    figures: dict[str, Any] = {k: stats.over_runs(v) for k, v in runs.items()}
    figures["users"] = float(len(users))
    figures["ratio"] = stats.ratio(
        figures["gateway"]["total_s"]["median"], figures["stock"]["total_s"]["median"]
    )
    figures["paired_ratio"] = stats.paired_ratios(
        [r["total_s"] for r in runs["gateway"]], [r["total_s"] for r in runs["stock"]]
    )
    failures = sum(r["failures"] for r in runs["gateway"])
    return {
        "figures": figures,
        "met": failures == 0,
        "summary": (
            f"{len(users)} users: {figures['gateway']['total_s']['median']:.2f} s through the "
            f"gateway vs {figures['stock']['total_s']['median']:.2f} s on one stock server "
            f"({figures['ratio']:.2f}x), {failures:.0f} failures"
        ),
    }
