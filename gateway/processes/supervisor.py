"""The parent of several gateway processes: prepares once, forks, watches, stops (see __init__).

    serve_several(config, count, provider, child=None) -> int
        0 after SIGTERM/SIGINT, 1 when a child failed during start-up (or could not stop).
        `child(index, config, provider, sock, metrics_sock)` serves in each child until its
        SIGTERM (default: gateway.app.run; the benchmark adds its control port)

The parent blocks SIGCHLD, SIGTERM and SIGINT and waits for them with `sigwaitinfo`, so no
signal is lost between two checks and no handler runs in the middle of a fork. Children run in
their own process group: a Ctrl-C at a terminal reaches the parent only, which passes SIGTERM
on, so each child gets one stop signal (aiohttp's graceful shutdown, workers stopped). A child
also gets SIGTERM if the parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import logs
from gateway.processes import METRICS_DIR_ENV
from gateway.processes.listeners import bind_group, bind_one
from gateway.processes.share import share

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.identity.provider import IdentityProvider

log = logging.getLogger("gateway.processes")

#: A child that exits within this many seconds of its start failed to start.
START_GRACE = 10.0
#: Seconds the children have to stop after SIGTERM (aiohttp's 10 s, then their workers').
STOP_GRACE = 40.0
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}

ChildMain = Callable[
    [int, "Config", "Callable[[], IdentityProvider] | None", socket.socket, "socket.socket | None"],
    None,
]


def run_app(
    index: int,
    config: Config,
    provider: Callable[[], IdentityProvider] | None,
    sock: socket.socket,
    metrics_sock: socket.socket | None,
) -> None:
    from gateway.app import run

    run(config, provider, sock=sock, metrics_sock=metrics_sock)


@dataclass
class Child:
    index: int
    pid: int
    started: float


def serve_several(
    config: Config,
    count: int,
    provider: Callable[[], IdentityProvider] | None = None,
    child: ChildMain = run_app,
) -> int:
    if "prometheus_client" in sys.modules:  # pragma: no cover - a wiring mistake
        raise RuntimeError("prometheus_client was imported before its multiprocess mode was set")
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    logs.configure(config.logging.level, config.logging.format, with_pid=True)
    try:
        _prepare(config)
        try:
            group = bind_group(config.server.host, config.server.port, count)
        except OSError as exc:
            log.error(
                "cannot listen",
                extra={
                    "address": f"{config.server.host}:{config.server.port}",
                    "error": exc.strerror,
                },
            )
            return 1
        metrics_sock = _metrics_socket(config)
        mine = share(config, count)
        return _Supervisor(mine, group, metrics_sock, provider, child).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _prepare(config: Config) -> None:
    """What must happen once: the secret file, the registry's schema."""
    from gateway.registry import open_registry
    from gateway.workers import credentials

    credentials.load_or_create(config.data_dir, config.secret)
    registry = open_registry(config)
    asyncio.run(registry.close())


def _metrics_socket(config: Config) -> socket.socket | None:
    settings = config.metrics
    if not settings.enabled:
        return None
    try:
        return bind_one(settings.host, settings.port)
    except OSError as exc:
        log.error(
            "metrics listener could not start; /metrics is off",
            extra={"address": f"{settings.host}:{settings.port}", "error": exc.strerror},
        )
        return None


class _Supervisor:
    def __init__(
        self,
        config: Config,
        group: list[socket.socket],
        metrics_sock: socket.socket | None,
        provider: Callable[[], IdentityProvider] | None,
        child: ChildMain,
    ) -> None:
        self._child_main = child
        self._config = config
        self._group = group
        self._metrics_sock = metrics_sock
        self._provider = provider
        self._children: dict[int, Child] = {}

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(len(self._group)):
                self._start(index)
            log.info(
                "gateway processes started",
                extra={
                    "processes": len(self._group),
                    "pids": sorted(self._children),
                    "address": f"{self._config.server.host}:{self._config.server.port}",
                },
            )
            return self._watch()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            for sock in self._group:
                sock.close()
            if self._metrics_sock is not None:
                self._metrics_sock.close()

    def _watch(self) -> int:
        while True:
            info = signal.sigwaitinfo(_SIGNALS)
            if info.si_signo != signal.SIGCHLD:
                log.info("stopping gateway processes", extra={"signal": info.si_signo})
                return self._stop_all(0)
            for child, status in self._reap():
                ran = time.monotonic() - child.started
                log.error(
                    "gateway process exited",
                    extra={"child": child.pid, "status": _describe(status), "ran_s": round(ran, 1)},
                )
                if ran < START_GRACE:
                    log.error("a gateway process failed during start-up; stopping all")
                    return self._stop_all(1)
                self._start(child.index)

    def _reap(self) -> list[tuple[Child, int]]:
        gone = []
        while self._children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            child = self._children.pop(pid, None)
            if child is not None:
                _forget_metrics(pid)
                gone.append((child, status))
        return gone

    def _stop_all(self, code: int) -> int:
        for pid in self._children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self._children and time.monotonic() < deadline:
            self._reap()
            if self._children:
                signal.sigtimedwait({signal.SIGCHLD}, 0.2)
        if self._children:
            log.error(
                "gateway processes did not stop in time; killed",
                extra={"pids": list(self._children)},
            )
            for pid in self._children:
                _kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            self._children.clear()
            code = 1
        log.info("gateway processes stopped")
        return code

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                code = self._child(index)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self._children[pid] = Child(index, pid, time.monotonic())

    def _child(self, index: int) -> int:
        os.setpgid(0, 0)
        _die_with_parent()
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        mine = self._group[index]
        for sock in self._group:
            if sock is not mine:
                sock.close()
        self._child_main(index, self._config, self._provider, mine, self._metrics_sock)
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _forget_metrics(pid: int) -> None:
    """Drop a dead child's live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
