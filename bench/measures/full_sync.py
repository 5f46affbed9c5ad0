"""1. Full upload and full download of a big collection: through the gateway vs direct.

The real `anki` client uploads and downloads the same collection through the gateway and
straight to the account's own worker (the same stock server process behind the gateway, so the
only difference is the gateway hop). Runs are interleaved, and which route goes first
alternates, so drift on this shared machine hits both routes alike.
"""

from __future__ import annotations

from typing import Any

from bench import collection, stats
from bench.cognito import PASSWORD
from bench.context import Context

ID = 1
TITLE = "Full upload and download of a big collection"
TARGET = "through-gateway / direct <= 1.05 (medians), upload and download"
LIMIT = 1.05
USER = "fulluser"


def run(ctx: Context) -> dict[str, Any]:
    s = ctx.settings
    source = ctx.collection()
    pool = ctx.pool([USER])
    gateway = ctx.gateway("m1", pool)
    from bench.client import Client

    client = None
    try:
        collection.copy_to(source, ctx.work / "m1" / "client")
        client = Client(ctx.work / "m1" / "client")
        client.login(USER, PASSWORD, gateway.url)
        via_gateway = client.auth_for(gateway.url)
        client.full_transfer(via_gateway, upload=True)  # warm-up: worker started, server filled
        port = gateway.stats()["workers"][USER]["port"]
        direct = client.auth_for(f"http://127.0.0.1:{port}/")
        times: dict[str, dict[str, list[float]]] = {
            route: {"upload": [], "download": []} for route in ("gateway", "direct")
        }
        for i in range(s.full_sync_runs):
            order = ("gateway", "direct") if i % 2 == 0 else ("direct", "gateway")
            for route in order:
                auth = via_gateway if route == "gateway" else direct
                times[route]["upload"].append(client.full_transfer(auth, upload=True))
                times[route]["download"].append(client.full_transfer(auth, upload=False))
            print(
                f"  run {i + 1}: upload gw {times['gateway']['upload'][-1]:.2f} s / direct "
                f"{times['direct']['upload'][-1]:.2f} s; download gw "
                f"{times['gateway']['download'][-1]:.2f} s / direct "
                f"{times['direct']['download'][-1]:.2f} s"
            )
    finally:
        if client is not None:
            client.close()
        gateway.stop()

    figures: dict[str, Any] = {"collection_mb": source.stat().st_size / 1e6}
    met = True
    for kind in ("upload", "download"):
        gw, direct_s = times["gateway"][kind], times["direct"][kind]
        gw_s, dir_s = stats.spread(gw), stats.spread(direct_s)
        r = stats.ratio(gw_s["median"], dir_s["median"])
        met = met and r <= LIMIT
        figures[kind] = {
            "gateway_s": gw_s,
            "direct_s": dir_s,
            "ratio": r,
            "paired_ratio": stats.paired_ratios(gw, direct_s),
            "gateway_mb_per_s": figures["collection_mb"] / gw_s["median"],
        }
    return {
        "figures": figures,
        "met": met,
        "raw": times,
        "summary": (
            f"upload {figures['upload']['ratio']:.3f}x, download "
            f"{figures['download']['ratio']:.3f}x of direct "
            f"({figures['collection_mb']:.0f} MB collection)"
        ),
    }
