"""The gateway as the benchmark runs it: its own process, production code, plus a control port.

    python -m bench.gateway_proc --control-port PORT [--control-port PORT2 ...]
                                                      (settings from GATEWAY_* variables)

With `server.processes` above 1 the gateway runs as `serve` runs it (gateway/processes/), and
process i of the gateway has its own control port, the i-th given.

The gateway app is `gateway.app.create_app(config, provider=...)` exactly as `python -m gateway
serve` builds it; the only addition is that the Cognito provider (the production
`CognitoProvider`, pointed at moto through `cognito.endpoint_url` + `local_stand_in`) is wrapped
to time each `authenticate` call, which is how the report separates Cognito's share of a login.

A second, separate aiohttp app on `--control-port` lets the benchmark look inside and steer:

    POST /stats          Cognito calls and call times, cache and registry sizes, live workers
    POST /reset          forget the recorded call times
    POST /clear-cache    drop every cached login (the next login of each user is uncached)
    POST /stop-workers   stop every worker, as the idle reaper would (the next lease is cold)
    POST /prefill {n}    n accounts in the registry, each with a host key and a cached login,
                         made by the same calls a real login makes (minus Cognito and worker)
    POST /gc             a full garbage collection, for a settled RSS reading

It reaches into the pool's private state for /stop-workers and /stats: that is benchmark
instrumentation, not an interface the gateway offers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import random
import signal
import socket
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway import config as config_mod
from gateway import logs
from gateway.processes.share import process_count

if TYPE_CHECKING:
    from gateway.identity.provider import Identity

# The gateway's own modules are imported where used: with several processes none may import
# prometheus_client before the supervisor has set its multiprocess mode (gateway/processes/).


class TimedProvider:
    """Any identity provider, with the wall time of every `authenticate` call recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.authenticate_ms: list[float] = []

    @property
    def calls(self) -> int:
        return int(self.inner.calls)

    async def authenticate(self, username: str, password: str) -> Identity:
        started = time.perf_counter()
        try:
            return await self.inner.authenticate(username, password)
        finally:
            self.authenticate_ms.append((time.perf_counter() - started) * 1000)

    async def lookup(self, username: str) -> Identity:
        return await self.inner.lookup(username)

    async def lookup_sub(self, sub: str, username: str = "") -> Identity:
        return await self.inner.lookup_sub(sub, username)

    async def close(self) -> None:
        await self.inner.close()


def control_app(gateway: web.Application, provider: TimedProvider) -> web.Application:
    from gateway.appkeys import LOGIN, POOL, REGISTRY
    from gateway.auth.login import LoginResult
    from gateway.identity.provider import Identity

    app = web.Application()

    async def stats(request: web.Request) -> web.Response:
        pool = gateway[POOL]
        workers = {
            name: {"port": slot.process.port, "pid": slot.process.pid}
            for name, slot in pool._slots.items()  # noqa: SLF001 - instrumentation
            if slot.process is not None and slot.process.alive
        }
        return web.json_response(
            {
                "pid": os.getpid(),
                "provider_calls": provider.calls,
                "authenticate_ms": provider.authenticate_ms,
                "cache_entries": len(gateway[LOGIN].cache),
                "registry_accounts": await gateway[REGISTRY].count(),
                "workers": workers,
                "pool": pool.stats(),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        provider.authenticate_ms.clear()
        return web.json_response({"ok": True})

    async def clear_cache(request: web.Request) -> web.Response:
        dropped = gateway[LOGIN].cache.forget(lambda _key, _value: True)
        return web.json_response({"dropped": dropped})

    async def stop_workers(request: web.Request) -> web.Response:
        pool = gateway[POOL]
        for slot in list(pool._slots.values()):  # noqa: SLF001 - instrumentation
            pool._discard(slot, "benchmark: cold start")  # noqa: SLF001
        stopping = list(pool._stopping.values())  # noqa: SLF001
        if stopping:
            await asyncio.wait(stopping, timeout=30)
        return web.json_response({"stopped": len(stopping)})

    async def prefill(request: web.Request) -> web.Response:
        n = int((await request.json())["n"])
        registry, login = gateway[REGISTRY], gateway[LOGIN]
        rng = random.Random(6)  # noqa: S311 - benchmark data
        started = time.perf_counter()
        for i in range(n):
            # What a Cognito email-alias pool gives: a UUID username, the email as typed.
            email = f"user{i:05d}@example.com"
            identity = Identity(
                sub=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                username=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                email=email,
            )
            account, _ = await registry.ensure(identity)
            key = hashlib.sha1(rng.randbytes(20)).hexdigest()  # noqa: S324 - a host key's shape
            await registry.add_host_key(identity.sub, key)
            await registry.touch(identity.sub)
            password = rng.randbytes(12).hex()
            login.cache.put(
                login.cache.key(email, password), LoginResult(identity, account.name, key)
            )
        return web.json_response(
            {
                "accounts": await registry.count(),
                "cached": len(login.cache),
                "s": time.perf_counter() - started,
            }
        )

    async def collect(request: web.Request) -> web.Response:
        return web.json_response({"collected": gc.collect()})

    for name, handler in (
        ("stats", stats),
        ("reset", reset),
        ("clear-cache", clear_cache),
        ("stop-workers", stop_workers),
        ("prefill", prefill),
        ("gc", collect),
    ):
        app.router.add_post("/" + name, handler)
    return app


async def serve(
    config: config_mod.Config, control_port: int, sock: socket.socket | None = None
) -> None:
    from gateway.app import create_app, server_options
    from gateway.identity.cognito import CognitoProvider
    from gateway.web.connections import Runner

    provider = TimedProvider(CognitoProvider(config.cognito))
    app = create_app(config, provider=provider)
    runner = Runner(app, access_log=None, handle_signals=False, **server_options(config))
    await runner.setup()
    if sock is None:
        await web.TCPSite(runner, config.server.host, config.server.port).start()
    else:
        await web.SockSite(runner, sock).start()
    control = web.AppRunner(control_app(app, provider), access_log=None)
    await control.setup()
    await web.TCPSite(control, "127.0.0.1", control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await control.cleanup()
        await runner.cleanup()  # stops every worker


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_proc")
    parser.add_argument("--control-port", type=int, required=True, action="append")
    args = parser.parse_args()
    config = config_mod.load(None)
    ports: list[int] = args.control_port
    count = process_count(config.server.processes, len(os.sched_getaffinity(0)))
    if count == 1:
        logs.configure(config.logging.level, config.logging.format)
        asyncio.run(serve(config, ports[0]))
        return
    if len(ports) < count:
        parser.error(f"{count} processes need {count} --control-port")

    def child(index: int, mine: config_mod.Config, _: Any, sock: socket.socket, __: Any) -> None:
        logs.configure(mine.logging.level, mine.logging.format, with_pid=True)
        asyncio.run(serve(mine, ports[index], sock))

    from gateway.processes.supervisor import serve_several

    sys.exit(serve_several(config, count, child=child))


if __name__ == "__main__":
    main()
