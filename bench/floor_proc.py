"""The least a proxy built on the gateway's own parts costs: the measure-3 reference "floor".

    python -m bench.floor_proc --port PORT --upstream PORT

aiohttp's server (as the gateway runs it: no access log) and the gateway's worker link
(gateway/forwarding/wire.py, kept connections) forwarding every POST to one worker, with nothing
else: no host key lookup, no account, no lease, no backup gate, no meter, no log line, no
metrics. It answers `GET /health` for the benchmark's readiness wait. What the gateway costs above
this is what its checks cost; what this costs above the stock server direct is the price of a
second HTTP stack in Python, which no trimming of the gateway's own work removes.
"""

from __future__ import annotations

import argparse

from aiohttp import web

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
