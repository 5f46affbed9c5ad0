"""The least a proxy built on the gateway's own parts costs: the measure-3 reference "floor".

    python -m bench.floor_proc --port PORT --upstream PORT [--processes N]

aiohttp's server (as the gateway runs it: no access log) and the gateway's worker link
(gateway/forwarding/wire.py, kept connections) forwarding every POST to one worker, with nothing
else: no host key lookup, no account, no lease, no backup gate, no meter, no log line, no
metrics. It answers `GET /health` for the benchmark's readiness wait. With `--processes N` it
runs N such processes on one port (SO_REUSEPORT, as `serve` runs the gateway: the kernel spreads
connections over them): the floor of a proxy that uses every core. What the gateway costs above
this is what its checks cost; what this costs above the stock server direct is the price of a
second HTTP stack in Python, which no trimming of the gateway's own work removes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from aiohttp import web

from bench.procs import die_with_parent
from gateway.forwarding.wire import WorkerLink

#: Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the link writes itself.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


def make_app(upstream: int) -> web.Application:
    link = WorkerLink()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        answer = await link.exchange(
            upstream, "POST", request.path, headers, body, reuse=True, whole=1 << 20
        )
        try:
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP}
            return web.Response(status=answer.status, headers=kept, body=answer.head)
        finally:
            answer.release()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/{path:.*}", forward)
    return app


def _wait_for_listeners(port: int, count: int, timeout: float = 30.0) -> None:
    """Until `count` sockets listen on loopback `port` (/proc/net/tcp: state 0A is LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/tcp", encoding="ascii") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        if sum(1 for row in rows if row[1] == wanted and row[3] == "0A") >= count:
            return
        time.sleep(0.05)
    raise SystemExit(f"{count} floor processes did not start listening on {port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    others = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.floor_proc", "--port", str(args.port)]
            + ["--upstream", str(args.upstream)],
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call
        )
        for _ in range(args.processes - 1)
    ]
    _wait_for_listeners(args.port, len(others))  # so /health answers once all are up
    try:
        web.run_app(
            make_app(args.upstream),
            host="127.0.0.1",
            port=args.port,
            access_log=None,
            print=None,
            reuse_port=True,
        )
    finally:
        for other in others:
            other.terminate()
            other.wait()


if __name__ == "__main__":
    main()
