"""8. Capacity: how many devices doing normal syncs one 2-core host serves, gateway vs one
stock server, with p99 sync time <= 2 s and no failure.

A device is a real `anki` client (a thread of the benchmark process; the Rust backend releases
the GIL) with its own collection, logged in and fully uploaded once. Then it loops: think, make
a small change (a few new notes, a few cards answered, every few syncs one small media file),
sync as Anki does (collection, then media). Think time is drawn uniformly from
`capacity_think_s` (default 1-3 s, mean 2 s), each device starting at a random point in it.
Why that think time: a person syncs after a review session, minutes apart, but thousands of
real clients cannot run beside the servers on 2 cores, so time is compressed: with 2 s the
servers reach their limit with a few hundred client threads (with a 5 s mean, tried first, 64
devices and their servers used a sixth of the machine). What does not depend on it is the rate
of syncs served at the limit (`syncs_per_s`), from which the number of devices for any other
think time follows (devices ≈ rate × seconds between one device's syncs, while their workers
stay running).

For N devices, a step runs them for the warm-up (the longest think time: every device has
synced once) and then for `capacity_window_s`; the syncs that start in the window count. A step
passes with zero failures (a sync that raised, or asked for a full sync) and p99 ≤ 2 s. N
doubles from `capacity_start` until a step fails, then is bisected (ramp.py), within
`capacity_budget_s` per setup. The setups: the gateway (a worker per account) and one stock
server holding every user (`SYNC_USER1..N`).

The clients share the 2 cores with the servers. Each step records the cores used by the
clients (this process: one GIL, so near one core they are the limit), by the servers (the
gateway and its workers, or the stock server), by interrupts (loopback TCP, charged to no
process) and by everything else on the machine (other people's work), so the report can say
how much of the host the servers had, and the servers' CPU time per sync.
The gateway runs as `serve` runs it by default: one process per core (gateway/processes/; its
CPU is that of every gateway process, its workers' that of their children), with
`workers.max_workers` raised to the largest N (every device's worker
stays live between its syncs; with the default 50, more devices mean workers stopped and
started) and `server.max_requests_per_address` raised (every device here is 127.0.0.1). On a
host of several cores the gateway is measured a second time as one process (`gateway_one`):
cheaper per sync, but its one event loop is the ceiling (docs/benchmarks.md, "One process or
one per core on two cores").

Measures 1 (upload ratio) and 3 (added p50) are reported in the same result: taken from this
run when they ran before it, else run here.
"""

from __future__ import annotations

import os
import random
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import procs, stats
from bench.client import Client, Required
from bench.cognito import PASSWORD
from bench.context import Context
from bench.measures import full_sync, overhead
from bench.ramp import largest_passing

ID = 8
TITLE = "Capacity: devices syncing normally on one 2-core host"
TARGET = (
    "largest number of devices with zero failures and p99 sync <= 2 s (gateway and one stock "
    "server, reported); in the same run measure 3's added p50 <= 1 ms and measure 1's upload "
    "ratio <= 1.05"
)
P99_LIMIT_S = 2.0
NORMAL = (Required.NO_CHANGES, Required.NORMAL_SYNC)
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds of one process (utime + stime), plus its reaped children's if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _machine_cpu() -> tuple[float, float, float]:
    """(busy, total, interrupts) CPU seconds of all cores since boot, from /proc/stat.
    Interrupts (irq + softirq) are in no process's time: most of loopback TCP runs there."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already in user
    return (total - values[3] - values[4]) / _TICK, total / _TICK, (values[5] + values[6]) / _TICK


class Servers:
    """The server side of one setup, for CPU accounting: a process and its children, or the
    parent of several gateway processes (`processes`), those and their children."""

    def __init__(self, pid: int, processes: list[int] | None = None) -> None:
        self.pid = pid
        self.processes = [p for p in processes or () if p != pid]

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of (the gateway or stock server processes, their children: workers)."""
        parents = [self.pid, *self.processes]
        own = sum(_cpu_of(p) for p in parents)
        # Workers that exited were reaped by the gateway: their time is in its children's.
        reaped = sum(_cpu_of(p, reaped_children=True) - _cpu_of(p) for p in self.processes)
        if not self.processes:
            reaped = _cpu_of(self.pid, reaped_children=True) - own
        live = sum(
            _cpu_of(child)
            for p in parents
            for child in procs.children_of(p)
            if child not in self.processes
        )
        return own, reaped + live


class Device:
    """One real client and what it does between syncs."""

    def __init__(self, ctx: Context, setup: str, user: str, rng: random.Random) -> None:
        self.user = user
        self.client = Client(ctx.work / "m8" / setup / user)
        self.rng = rng
        self.syncs = 0

    def enrol(self, password: str, endpoint: str) -> None:
        self.client.add_notes([f"{self.user} first note {k}" for k in range(20)])
        self.client.login(self.user, password, endpoint)
        self.client.sync()  # full upload: from here on, syncs are normal

    def change(self, notes: int, reviews: int, media_every: int) -> None:
        """A small change, as a short review session makes it."""
        col = self.client.col
        self.client.add_notes([f"{self.user} sync {self.syncs} note {k}" for k in range(notes)])
        for _ in range(reviews):
            card = col.sched.getCard()
            if card is None:
                break
            col.sched.answerCard(card, self.rng.choice((1, 3, 3, 3, 4)))
        if media_every and self.syncs % media_every == media_every - 1:
            data = f"{self.user} {self.syncs} ".encode() * self.rng.randint(100, 1000)
            self.client.add_media(f"{self.user}-{self.syncs}.txt", data)

    def sync(self) -> str | None:
        """One normal sync; None, or what went wrong."""
        self.syncs += 1
        try:
            required = self.client.sync()
        except Exception as exc:  # any failure is counted, none may stop the run
            return f"{type(exc).__name__}: {exc}"
        return None if required in NORMAL else f"server required {required}"

    def close(self) -> None:
        self.client.close()


class Fleet:
    """The devices of one setup; `step(n)` runs the first n for one measurement."""

    def __init__(self, ctx: Context, setup: str, endpoint: str, passwords: dict[str, str]):
        self.ctx, self.setup, self.endpoint, self.passwords = ctx, setup, endpoint, passwords
        self.devices: list[Device] = []
        self.rng = random.Random(8)  # noqa: S311 - think times, not secrets

    def grow(self, n: int) -> None:
        users = list(self.passwords)[len(self.devices) : n]
        new = [Device(self.ctx, self.setup, u, random.Random(u)) for u in users]  # noqa: S311
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda d: d.enrol(self.passwords[d.user], self.endpoint), new))
        self.devices += new

    def close(self) -> None:
        for device in self.devices:
            device.close()

    def step(self, n: int, servers: Servers) -> dict[str, Any]:
        s = self.ctx.settings
        self.grow(n)
        lo, hi = s.capacity_think_s
        warmup = hi + 1.0
        stop = threading.Event()
        began = time.monotonic()
        window = (began + warmup, began + warmup + s.capacity_window_s)
        samples: list[float] = []
        failures: list[str] = []
        marks: dict[str, Any] = {}

        def live(device: Device, first_wait: float) -> None:
            wait = first_wait
            while not stop.wait(wait):
                device.change(s.capacity_notes, s.capacity_reviews, s.capacity_media_every)
                started = time.monotonic()
                failure = device.sync()
                if window[0] <= started < window[1]:
                    if failure is None:
                        samples.append(time.monotonic() - started)
                    else:
                        failures.append(failure)
                wait = self.rng.uniform(lo, hi)

        threads = [
            threading.Thread(target=live, args=(d, self.rng.uniform(0, hi)), daemon=True)
            for d in self.devices[:n]
        ]
        try:
            for t in threads:
                t.start()
            time.sleep(max(0.0, window[0] - time.monotonic()))
            marks["start"] = self._cpu(servers)
            time.sleep(max(0.0, window[1] - time.monotonic()))
            marks["end"] = self._cpu(servers)
        finally:  # also on Ctrl-C: no device may still use its collection when it is closed
            stop.set()
            for t in threads:
                t.join(120)
        if any(t.is_alive() for t in threads):
            failures.append("a sync did not finish within 120 s of the window's end")
        for f in failures[:3]:
            print(f"    failure: {f}")
        return self._summary(n, samples, failures, marks["start"], marks["end"])

    @staticmethod
    def _cpu(servers: Servers) -> dict[str, float]:
        busy, total, interrupts = _machine_cpu()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "busy": busy,
            "total": total,
            "interrupts": interrupts,
            "clients": usage.ru_utime + usage.ru_stime,
            "main_server": (split := servers.cpu())[0],
            "children": split[1],
            "servers": sum(split),
            "wall": time.monotonic(),
        }

    def _summary(
        self, n: int, samples: list[float], failures: list[str], a: dict, b: dict
    ) -> dict[str, Any]:
        d = {k: b[k] - a[k] for k in a}
        busy = max(d["busy"], 1e-9)
        others = max(0.0, busy - d["clients"] - d["servers"] - d["interrupts"])
        latency = stats.latency([x * 1000 for x in samples])
        syncs = len(samples) + len(failures)
        p99_s = latency["p99"] / 1000 if samples else float("inf")
        return {
            "devices": float(n),
            "syncs": float(syncs),
            "failures": float(len(failures)),
            "syncs_per_s": syncs / d["wall"],
            "p50_s": latency["p50"] / 1000,
            "p99_s": p99_s,
            "max_s": latency["max"] / 1000,
            "passed": float(not failures and p99_s <= P99_LIMIT_S),
            # Shares of the CPU time used on the whole machine during the window.
            "machine_busy": d["busy"] / d["total"],
            "clients_share": d["clients"] / busy,
            "servers_share": d["servers"] / busy,
            "others_share": others / busy,
            # Cores used on average: the clients are one process (one GIL); near 1.0 they,
            # not the servers, are what limits the step. Interrupts: the kernel's network
            # work (this benchmark's loopback traffic, mostly) that no process is charged for.
            "servers_cores": d["servers"] / d["wall"],
            "clients_cores": d["clients"] / d["wall"],
            "interrupts_cores": d["interrupts"] / d["wall"],
            "others_cores": others / d["wall"],
            "server_cpu_ms_per_sync": 1000 * d["servers"] / syncs if syncs else float("nan"),
            "client_cpu_ms_per_sync": 1000 * d["clients"] / syncs if syncs else float("nan"),
            # The gateway's own share, or the one stock server's (no children).
            "main_server_cpu_ms_per_sync": (
                1000 * d["main_server"] / syncs if syncs else float("nan")
            ),
        }


def find_capacity(fleet: Fleet, servers: Servers, most: int) -> dict[str, Any]:
    s = fleet.ctx.settings
    steps: dict[int, dict[str, Any]] = {}

    def passes(n: int) -> bool:
        result = fleet.step(n, servers)
        steps[n] = result
        print(
            f"  {fleet.setup}, {n} devices: {result['syncs']:.0f} syncs "
            f"({result['syncs_per_s']:.1f}/s), p50 {result['p50_s']:.2f} s, p99 "
            f"{result['p99_s']:.2f} s, {result['failures']:.0f} failed; cores used: servers "
            f"{result['servers_cores']:.2f}, clients {result['clients_cores']:.2f}, interrupts "
            f"{result['interrupts_cores']:.2f}, others {result['others_cores']:.2f} -> "
            f"{'pass' if result['passed'] else 'FAIL'}",
            flush=True,
        )
        return bool(result["passed"])

    ramp = largest_passing(
        passes,
        start=min(s.capacity_start, most),
        most=most,
        tolerance=s.capacity_tolerance,
        deadline=time.monotonic() + s.capacity_budget_s,
    )
    return {
        "devices": float(ramp.best),
        "first_failing": float(ramp.failed) if ramp.failed is not None else None,
        "capped": ramp.capped,
        "timed_out": ramp.timed_out,
        "at_limit": steps.get(ramp.best, {}),
        "steps": [steps[n] for n, _ in ramp.steps],
    }


def _earlier(ctx: Context, number: int, module: Any) -> dict[str, Any]:
    """Measure `number`'s result from this run, or run it now."""
    found = ctx.results.get(str(number))
    if found and "error" not in found:
        return {**found, "source": f"this run, measure {number}"}
    print(f"  measure {number} did not run before this one: running it now")
    return {**module.run(ctx), "source": "run by measure 8"}


def _through_gateway(
    ctx: Context, pool: Any, setup: str, processes: int, users: list[str]
) -> dict[str, Any]:
    most = len(users)
    gateway = ctx.gateway(
        "m8" if setup == "gateway" else f"m8-{setup}",
        pool,
        processes=processes,
        # Shared out between the processes (gateway/processes/share.py): every device's worker
        # stays live in whichever process started it.
        workers_max_workers=str(processes * (most + 4)),
        server_max_requests_per_address=str(100_000),
    )
    fleet = Fleet(ctx, setup, gateway.url, dict.fromkeys(users, PASSWORD))
    try:
        servers = Servers(gateway.pid, gateway.stats()["pids"])
        return {**find_capacity(fleet, servers, most), "processes": processes}
    finally:
        fleet.close()
        gateway.stop()


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    most = s.capacity_most
    users = [f"dev{i:03d}" for i in range(most)]
    results: dict[str, Any] = {}
    pool = ctx.pool(users)
    cores = len(os.sched_getaffinity(0))
    # The default (one process per core) first; on a host of several cores, one process too
    # (docs/benchmarks.md, "One process or one per core on two cores").
    for setup, processes in (("gateway", cores), ("gateway_one", 1))[: 2 if cores > 1 else 1]:
        results[setup] = _through_gateway(ctx, pool, setup, processes, users)
    passwords = {u: f"pw-{u}" for u in users}
    stock = procs.stock_server(
        list(passwords.items()),
        ctx.folder("m8", "stock-base"),
        ctx.log("m8-stock.log"),
        timeout=60 + 0.5 * most,
    )
    fleet = Fleet(ctx, "stock", f"http://127.0.0.1:{stock.port}/", passwords)
    try:
        results["stock"] = find_capacity(fleet, Servers(stock.pid), most)
    finally:
        fleet.close()
        stock.stop()

    m1 = _earlier(ctx, full_sync.ID, full_sync)
    m3 = _earlier(ctx, overhead.ID, overhead)
    upload_ratio = m1["figures"]["upload"]["ratio"]
    added_p50 = m3["figures"]["c1"]["gateway_added_p50_ms"]["median"]
    results["checks"] = {
        "upload_ratio": upload_ratio,
        "upload_ratio_source": m1["source"],
        "added_p50_ms": added_p50,
        "added_p50_source": m3["source"],
        "throughput_16": m3["figures"].get("c16", {}).get("gateway", {}).get("throughput"),
        "throughput_16_cores": m3["figures"]
        .get("c16", {})
        .get("gateway_cores", {})
        .get("throughput"),
    }
    results["conditions"] = {
        "think_s": list(s.capacity_think_s),
        "window_s": s.capacity_window_s,
        "notes_per_sync": s.capacity_notes,
        "reviews_per_sync": s.capacity_reviews,
        "media_every": s.capacity_media_every,
        "most_devices": most,
        "cpus": os.cpu_count(),
    }
    gw, st = results["gateway"], results["stock"]
    one = results.get("gateway_one")
    met = upload_ratio <= full_sync.LIMIT and added_p50 <= overhead.LIMIT_MS
    return {
        "figures": results,
        "met": met,
        "summary": (
            f"{gw['devices']:.0f} devices through the gateway "
            f"({gw['processes']} processes, {gw['at_limit'].get('syncs_per_s', 0):.1f} syncs/s), "
            + (
                f"{one['devices']:.0f} through one gateway process "
                f"({one['at_limit'].get('syncs_per_s', 0):.1f} syncs/s), "
                if one
                else ""
            )
            + f"{st['devices']:.0f} on one "
            f"stock server ({st['at_limit'].get('syncs_per_s', 0):.1f} syncs/s), think "
            f"{s.capacity_think_s[0]:g}-{s.capacity_think_s[1]:g} s; added p50 "
            f"{added_p50:.3f} ms, upload ratio {upload_ratio:.3f}"
        ),
    }
