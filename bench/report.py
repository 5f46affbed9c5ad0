"""The Markdown report (and PNG plots) from `results.json`.

Plots need matplotlib (the `bench` extra); it is imported only when plots are asked for, so the
quick mode runs with the project's own dependencies.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

REPORT = "report.md"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def med(block: dict[str, Any] | None, digits: int = 2, unit: str = "") -> str:
    """'median (min–max)' of a spread block."""
    if not block:
        return "n/a"
    text = f"{fmt(block.get('median'), digits)}{unit}"
    if block.get("runs", 0) and block["runs"] > 1:
        text += f" ({fmt(block.get('min'), digits)}–{fmt(block.get('max'), digits)})"
    return text


def verdict(result: dict[str, Any]) -> str:
    if "error" in result:
        return "**error**"
    met = result.get("met")
    return "met" if met else ("**missed**" if met is False else "reported")


def write(results: dict[str, Any], out: Path, *, plots: bool) -> Path:
    images = draw(results, out) if plots else {}
    lines = render(results, images)
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def render(results: dict[str, Any], images: dict[str, str]) -> list[str]:
    meta, measures = results["meta"], results["measures"]
    m = meta["machine"]
    v = meta["versions"]
    lines = [
        "# Gateway benchmarks",
        "",
        f"- Command: `{meta['command']}`"
        + (" (quick mode: sizes too small for conclusions)" if meta["quick"] else ""),
        f"- Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- Versions: anki {v.get('anki')}, aiohttp {v.get('aiohttp')}, moto {v.get('moto')}, "
        f"nginx {v.get('nginx')}; gateway {v.get('gateway_commit')}",
        f"- Started {meta['started']}, took {fmt(meta.get('seconds'), 0)} s. The machine is "
        "shared: CPU busy (all cores, other people's work included) just before each measure: "
        + ", ".join(
            f"{k}: {fmt(100 * r['busy_before'], 0)} %"
            if r.get("busy_before") is not None
            else f"{k}: n/a"
            for k, r in measures.items()
        ),
        *[
            f"- Rerun on {r['started']}: measure {', '.join(map(str, r['measures']))}, with "
            f"`{r['command']}`"
            for r in meta.get("reruns", [])
        ],
        "- Every figure is the median over runs, with the lowest and highest run in brackets.",
        "",
        "| # | measure | target | result | |",
        "|---|---|---|---|---|",
    ]
    for key, r in measures.items():
        lines.append(
            f"| {key} | {r['title']} | {r['target']} | "
            f"{r.get('summary', r.get('error', ''))} | {verdict(r)} |"
        )
    for key, r in measures.items():
        lines += ["", f"## {key}. {r['title']}", "", f"Target: {r['target']}. {verdict(r)}.", ""]
        if "error" in r:
            lines.append(f"The measure failed: `{r['error']}`")
            continue
        lines += SECTIONS.get(key, _generic)(r)
        for note in r.get("notes", []):
            lines.append(f"- {note}")
        if key in images:
            lines += ["", f"![measure {key}]({images[key]})"]
    return lines


def _generic(r: dict[str, Any]) -> list[str]:
    return [f"```\n{r.get('figures')}\n```"]


def _full_sync(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    lines = [
        f"Collection: {fmt(f['collection_mb'], 1)} MB. Seconds for one transfer with the real "
        "client (`full_upload_or_download`).",
        "",
        "| | through the gateway | direct to the worker | gateway / direct | per-run ratios |",
        "|---|---|---|---|---|",
    ]
    for kind in ("upload", "download"):
        k = f[kind]
        lines.append(
            f"| {kind} | {med(k['gateway_s'])} s | {med(k['direct_s'])} s | "
            f"{fmt(k['ratio'], 3)} | {med(k['paired_ratio'], 3)} |"
        )
    return lines


def _contention(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    lines = [
        "`sync/meta` latency of the probing user (ms), one request every 10 ms.",
        "",
        "| setup | p50 | p90 | p99 | max | uploads in the window | meta errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in r.get("labels", {}).items():
        b = f[name]
        uploads = med(b["uploads"], 0) if "uploads" in b else "–"
        lines.append(
            f"| {label} | {med(b['p50'])} | {med(b['p90'])} | {med(b['p99'])} | "
            f"{med(b['max'], 1)} | {uploads} | {med(b['errors'], 0)} |"
        )
    return lines


def _overhead(r: dict[str, Any]) -> list[str]:
    lines = [
        "| clients | front | p50 ms | p90 ms | requests/s | added p50 ms | throughput vs direct |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, block in r["figures"].items():
        clients = key.lstrip("c")
        for front in (
            "direct",
            "nginx",
            "floor",
            "floor_cores",
            "gateway",
            "direct_cores",
            "gateway_cores",
        ):
            if front not in block:
                continue
            b = block[front]
            added = block.get(f"{front}_added_p50_ms")
            vs_direct = block.get(f"{front}_throughput_vs_direct")
            lines.append(
                f"| {clients} | {front} | {med(b['p50'], 3)} | {med(b['p90'], 3)} | "
                f"{med(b['throughput'], 0)} | {med(added, 3) if added else '–'} | "
                f"{fmt(vs_direct, 2) if not front.startswith('direct') else '–'} |"
            )
    lines.append("")
    for key, block in r["figures"].items():
        if "gateway_to_nginx_added_p50" in block:
            lines.append(
                f"- {key.lstrip('c')} client(s): the gateway adds "
                f"{fmt(block['gateway_to_nginx_added_p50'], 1)}x what nginx adds to the p50; "
                f"gateway p50 / nginx p50 = {fmt(block['gateway_to_nginx_p50'], 2)}, "
                f"throughput gateway / nginx = {fmt(block['gateway_to_nginx_throughput'], 2)}"
            )
    return lines


def _login(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    lines = [
        "| login | p50 ms | p90 ms | Cognito (moto) p50 ms | p50 excluding Cognito ms |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (
        ("cached", "cached"),
        ("uncached_running", "uncached, worker running"),
        ("uncached_cold", "uncached, cold worker"),
        ("moto_alone", "moto alone (AdminInitiateAuth from the benchmark)"),
    ):
        b = f[kind]
        lines.append(
            f"| {label} | {med(b['p50'])} | {med(b['p90'])} | "
            f"{med(b.get('cognito_p50')) if 'cognito_p50' in b else '–'} | "
            f"{med(b.get('excluding_cognito_p50')) if 'excluding_cognito_p50' in b else '–'} |"
        )
    return lines


def _calls(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    return [
        "| scenario | logins | Cognito calls | failed logins |",
        "|---|---|---|---|",
        f"| concurrent identical logins | {med(f['burst']['logins'], 0)} | "
        f"{med(f['burst']['calls'], 0)} | {med(f['burst']['failures'], 0)} |",
        f"| {fmt(f['ttl']['users']['median'], 0)} users within the TTL | "
        f"{med(f['ttl']['logins'], 0)} | {med(f['ttl']['calls'], 0)} | "
        f"{med(f['ttl']['failures'], 0)} |",
        *_pool_capacity(f.get("pool_capacity")),
    ]


def _pool_capacity(c: dict[str, float] | None) -> list[str]:
    if not c:
        return []
    return [
        "",
        f"One user pool serves {fmt(c['accounts'], 0)} accounts active within every re-check "
        f"interval ({fmt(c['recheck_seconds'], 0)} s) at the default re-check budget of "
        f"{fmt(c['recheck_calls_per_second'], 0)} AdminGetUser calls a second "
        f"({fmt(100 * c['share_of_user_read_quota'], 0)} % of the UserRead quota; computed from "
        f"the settings). With ListUsers re-checks and no budget: "
        f"{fmt(c['accounts_before_list_users'], 0)}, using all of that call's quota.",
    ]


def _memory(r: dict[str, Any]) -> list[str]:
    g = r["figures"]["gateway"]
    lines = [
        "| gateway process | RSS MiB | PSS MiB |",
        "|---|---|---|",
        f"| idle, empty registry | {med(g['idle_rss_mib'], 1)} | {med(g['idle_pss_mib'], 1)} |",
        f"| idle, accounts + cached logins | {med(g['filled_rss_mib'], 1)} | "
        f"{med(g['filled_pss_mib'], 1)} |",
        "",
        f"With {fmt(r['figures'].get('accounts'), 0)} accounts. Per account (host key and cached "
        f"login included): {med(g['bytes_per_account'], 0)} bytes. (100 MB = 95.4 MiB.)",
        "",
        f"Workers: {fmt(r['figures'].get('workers_side_by_side'), 0)} per command running side by "
        "side, each read once idle.",
        "",
        "| worker start command | PSS MiB | USS (private) MiB | RSS MiB |",
        "|---|---|---|---|",
    ]
    for name, w in r["figures"]["workers"].items():
        lines.append(
            f"| `{r.get('commands', {}).get(name, name)}` | {med(w['pss_mib'], 1)} | "
            f"{med(w['uss_mib'], 1)} | {med(w['rss_mib'], 1)} |"
        )
    lines += ["", f"Lowest PSS: `{r.get('default_command')}`."]
    return lines


def _many(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    return [
        f"{fmt(f['users'], 0)} clients syncing at once (seconds until the last is done).",
        "",
        "| setup | total s | failures |",
        "|---|---|---|",
        f"| gateway | {med(f['gateway']['total_s'])} | {med(f['gateway']['failures'], 0)} |",
        f"| one stock server | {med(f['stock']['total_s'])} | {med(f['stock']['failures'], 0)} |",
        "",
        f"gateway / one stock server: {fmt(f['ratio'], 2)} (per-run ratios "
        f"{med(f['paired_ratio'], 2)}).",
    ]


def _cluster(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    lines = [
        f"{fmt(f['users'], 0)} accounts, {fmt(f['clients'], 0)} connections sending `sync/meta` "
        "back to back; with three nodes each request goes to a random node.",
        "",
        "| setup | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|",
    ]
    for name in ("single", "1 node", "3 nodes"):
        b = f[name]
        lines.append(
            f"| {name} | {med(b['throughput'], 0)} | {med(b['p50'])} | {med(b['p99'])} | "
            f"{med(b['errors'], 0)} |"
        )
    return lines


#: Measure 8's setups, as results.json names them and as the report labels them; the one-process
#: gateway runs only on a host of several cores (bench/measures/capacity.py).
CAPACITY_SETUPS = (
    ("gateway", "gateway"),
    ("gateway_one", "gateway, one process"),
    ("stock", "one stock server"),
)


def _capacity(r: dict[str, Any]) -> list[str]:
    f = r["figures"]
    c = f["conditions"]
    lines = [
        f"Devices: real clients syncing in a loop, think time {fmt(c['think_s'][0], 1)}–"
        f"{fmt(c['think_s'][1], 1)} s, {c['notes_per_sync']} new notes and up to "
        f"{c['reviews_per_sync']} answers per sync, a media file every {c['media_every']} syncs; "
        f"{fmt(c['window_s'], 0)} s measured per step, at most {c['most_devices']} devices. A step "
        "passes with no failure and p99 <= 2 s. Cores used on average during the step, of "
        f"{c['cpus']}: the servers (gateway and workers, or the stock server), the clients (this "
        "process, one GIL: near 1.0 they limit the step), interrupts (the kernel's network work, "
        "charged to no process: mostly this benchmark's loopback traffic) and everything else "
        "(other people's work on a shared machine).",
        "",
        "| setup | devices | syncs/s | p50 s | p99 s | max s | failed | cores: servers | "
        "clients | interrupts | others | server CPU ms/sync (gateway's own) | client CPU "
        "ms/sync | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    setups = [(key, label) for key, label in CAPACITY_SETUPS if key in f]
    for setup, label in setups:
        for step in f[setup]["steps"]:
            server_ms = fmt(step["server_cpu_ms_per_sync"], 1)
            if setup != "stock":
                server_ms += f" ({fmt(step.get('main_server_cpu_ms_per_sync'), 1)})"
            lines.append(
                f"| {label} | {fmt(step['devices'], 0)} | {fmt(step['syncs_per_s'], 1)} | "
                f"{fmt(step['p50_s'])} | {fmt(step['p99_s'])} | {fmt(step['max_s'])} | "
                f"{fmt(step['failures'], 0)} | {fmt(step.get('servers_cores'))} | "
                f"{fmt(step.get('clients_cores'))} | {fmt(step.get('interrupts_cores'))} | "
                f"{fmt(step.get('others_cores'))} | "
                f"{server_ms} | {fmt(step['client_cpu_ms_per_sync'], 1)} | "
                f"{'pass' if step['passed'] else 'FAIL'} |"
            )
    lines.append("")
    for setup, label in setups:
        g = f[setup]
        limit = g.get("at_limit") or {}
        how = (
            " (the largest size tried: the limit is higher)"
            if g.get("capped")
            else (" (stopped by the time budget)" if g.get("timed_out") else "")
        )
        lines.append(
            f"- **{label}: {fmt(g['devices'], 0)} devices**{how}, "
            f"{fmt(limit.get('syncs_per_s'), 1)} syncs/s, p99 {fmt(limit.get('p99_s'))} s; "
            f"first failing size: {fmt(g.get('first_failing'), 0)}"
        )
    k = f["checks"]
    lines += [
        f"- measure 3, gateway's added p50 at 1 client: {fmt(k['added_p50_ms'], 3)} ms "
        f"(target <= 1 ms; {k['added_p50_source']}); 16-client throughput "
        f"{med(k.get('throughput_16'), 0)} requests/s",
        f"- measure 1, upload gateway / direct: {fmt(k['upload_ratio'], 3)} (target <= 1.05; "
        f"{k['upload_ratio_source']})",
    ]
    return lines


SECTIONS = {
    "1": _full_sync,
    "2": _contention,
    "3": _overhead,
    "4": _login,
    "5": _calls,
    "6": _memory,
    "7": _many,
    "9": _cluster,
    "8": _capacity,
}


# -- plots ---------------------------------------------------------------------------------


def draw(results: dict[str, Any], out: Path) -> dict[str, str]:
    """One PNG per measure that has something to show; returns {measure: file name}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return {}
    images = {}
    for key, painter in PAINTERS.items():
        r = results["measures"].get(key)
        if not r or "error" in r:
            continue
        fig = plt.figure(figsize=(7, 3.6), dpi=110)
        try:
            if painter in FIGURE_PAINTERS:
                painter(fig, r)
            else:
                painter(fig.add_subplot(), r)
            fig.suptitle(f"{key}. {r['title']}", fontsize=10)
            fig.tight_layout()
            name = f"bench-{key}.png"
            fig.savefig(out / name)
            images[key] = name
        finally:
            plt.close(fig)
    return images


def _bars(ax: Any, labels: list[str], blocks: list[dict[str, Any]], colors: list[str]) -> None:
    medians = [b["median"] or 0 for b in blocks]
    low = [max(0.0, (b["median"] or 0) - (b["min"] or 0)) for b in blocks]
    high = [max(0.0, (b["max"] or 0) - (b["median"] or 0)) for b in blocks]
    ax.bar(labels, medians, yerr=[low, high], color=colors, capsize=4)
    tops = [m + h for m, h in zip(medians, high, strict=True)]
    for i, value in enumerate(medians):
        ax.annotate(
            f"{value:,.0f}" if value >= 100 else f"{value:.3g}",
            (i, tops[i]),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )


def _paint_full_sync(ax: Any, r: dict[str, Any]) -> None:
    f = r["figures"]
    labels, blocks, colors = [], [], []
    for kind in ("upload", "download"):
        for route, color in (("gateway", "tab:blue"), ("direct", "tab:gray")):
            labels.append(f"{kind}\n{route}")
            blocks.append(f[kind][f"{route}_s"])
            colors.append(color)
    _bars(ax, labels, blocks, colors)
    ax.set_ylabel("seconds (median, min–max)")


def _paint_contention(ax: Any, r: dict[str, Any]) -> None:
    colors = {
        "stock": "tab:red",
        "stock_reframed": "tab:purple",
        "gateway": "tab:blue",
        "stock_idle": "tab:pink",
        "gateway_idle": "tab:cyan",
    }
    for name, label in r.get("labels", {}).items():
        samples = sorted(r.get("samples_ms", {}).get(name) or [])
        if not samples:
            continue
        ys = [(i + 1) / len(samples) for i in range(len(samples))]
        style = ":" if name.endswith("_idle") else "-"
        ax.plot(samples, ys, style, color=colors.get(name), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("sync/meta latency, ms (log)")
    ax.set_ylabel("fraction of requests")
    ax.axvline(5, color="black", linestyle=":", linewidth=1)
    ax.axhline(0.9, color="gray", linestyle=":", linewidth=0.8)
    ax.legend(fontsize=7)


def _paint_overhead(fig: Any, r: dict[str, Any]) -> None:
    palette = {
        "direct": "tab:gray",
        "nginx": "tab:green",
        "floor": "tab:olive",
        "gateway": "tab:blue",
    }
    left, right = fig.subplots(1, 2)
    for ax, metric, ylabel in (
        (left, "p50", "p50 latency, ms"),
        (right, "throughput", "requests per second"),
    ):
        labels, blocks, colors = [], [], []
        for key, block in r["figures"].items():
            for front in ("direct", "nginx", "floor", "gateway"):
                if front in block:
                    labels.append(f"{front}\n{key.lstrip('c')} cl.")
                    blocks.append(block[front][metric])
                    colors.append(palette[front])
        _bars(ax, labels, blocks, colors)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelsize=6)


def _paint_login(ax: Any, r: dict[str, Any]) -> None:
    f = r["figures"]
    kinds = [("cached", "cached"), ("uncached_running", "uncached"), ("uncached_cold", "cold")]
    cognito = [(f[k].get("cognito_p50") or {"median": 0})["median"] or 0 for k, _ in kinds]
    total = [f[k]["p50"]["median"] or 0 for k, _ in kinds]
    rest = [max(0.0, t - c) for t, c in zip(total, cognito, strict=True)]
    labels = [label for _, label in kinds]
    ax.bar(labels, cognito, color="tab:orange", label="Cognito (moto)")
    ax.bar(labels, rest, bottom=cognito, color="tab:blue", label="gateway + worker")
    for i, value in enumerate(total):
        ax.annotate(f"{value:.3g} ms", (i, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("login p50, ms")
    ax.legend(fontsize=8)


def _paint_memory(ax: Any, r: dict[str, Any]) -> None:
    g = r["figures"]["gateway"]
    labels = ["gateway idle\n(RSS)", "gateway filled\n(RSS)"]
    blocks = [g["idle_rss_mib"], g["filled_rss_mib"]]
    colors = ["tab:blue", "tab:blue"]
    for name, w in r["figures"]["workers"].items():
        short = "-c _rsbridge.syncserver()" if "rsbridge" in name else name.replace("python ", "")
        labels.append(f"worker\n{short}\n(PSS)")
        blocks.append(w["pss_mib"])
        colors.append("tab:gray")
    _bars(ax, labels, blocks, colors)
    ax.axhline(100e6 / 2**20, color="black", linestyle=":", linewidth=1)
    ax.set_ylabel("MiB (dotted: 100 MB)")
    ax.tick_params(axis="x", labelsize=7)


def _paint_many(ax: Any, r: dict[str, Any]) -> None:
    f = r["figures"]
    _bars(
        ax,
        ["gateway", "one stock server"],
        [f["gateway"]["total_s"], f["stock"]["total_s"]],
        ["tab:blue", "tab:gray"],
    )
    ax.set_ylabel(f"seconds until all {f['users']:.0f} syncs are done")


def _paint_capacity(ax: Any, r: dict[str, Any]) -> None:
    colors = {"gateway": "tab:blue", "gateway_one": "tab:green", "stock": "tab:gray"}
    for setup, label in CAPACITY_SETUPS:
        if setup not in r["figures"]:
            continue
        color = colors[setup]
        steps = sorted(r["figures"][setup]["steps"], key=lambda step: step["devices"])
        ax.plot(
            [step["devices"] for step in steps],
            [step["p99_s"] for step in steps],
            "o-",
            color=color,
            label=label,
        )
    ax.axhline(2.0, color="black", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("devices syncing in a loop")
    ax.set_ylabel("p99 sync time, s (dotted: 2 s)")
    ax.legend(fontsize=8)


FIGURE_PAINTERS = {_paint_overhead}
PAINTERS = {
    "1": _paint_full_sync,
    "2": _paint_contention,
    "3": _paint_overhead,
    "4": _paint_login,
    "6": _paint_memory,
    "7": _paint_many,
    "8": _paint_capacity,
}
