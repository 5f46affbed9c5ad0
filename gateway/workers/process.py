"""One stock sync server process: spawn it, wait until it is ready, log its output, stop it.

Contract:
- `start_worker()` returns a `WorkerProcess` that answered 200 on `GET /health`, or raises
  `WorkerFailed` (502: it exited first; the detail carries its last output lines),
  `WorkerKilledStarting` (503 with Retry-After: it was killed first, at its memory limit or by
  the host's OOM killer; `.death` says how) or `WorkerTimeout` (504: not ready within
  `start_timeout`; it has been killed and reaped).
  Either way no process and no box (containment) is left behind, also when the caller is
  cancelled.
- The worker's environment is built from scratch (`worker_env()`): the gateway's own environment
  holds AWS credentials and the gateway secret, and an inherited `SYNC_IP_HEADER` would make the
  stock server answer 500 to every request (anki-sync-protocol.md, "The official server").
- On Linux the worker gets SIGTERM when the gateway dies, even by SIGKILL (PR_SET_PDEATHSIG), so
  a crashed gateway leaves no orphan holding an account's media DB.
- Every output line goes to the "gateway.worker" logger with the account, through `redact()`,
  and without a request id (the worker serves many requests, not the one that started it).
  The worker prints what the gateway does not know itself (`WORKER_LOG`): its start, every
  refusal with its reason, errors, media files added; not its line for every request, which
  repeats the gateway's access line and cost 6 % of the gateway's time on small requests.
- `stop()` sends SIGINT (the stock server's clean shutdown), SIGKILL after a grace period, and
  always reaps.
- Containment (gateway/workers/containment/): the worker enters its `Box` in the child before
  exec, so it never runs outside it; the box is removed once the process is reaped. `death()`
  says why a worker exited that nobody asked to stop (`Death`: "memory" or "crash").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.errors import WorkerDied, WorkerFailed, WorkerTimeout
from gateway.logs import redact, request_id
from gateway.workers.containment import Box, Death, classify

log = logging.getLogger("gateway.worker")

POLL_INTERVAL = 0.02
STOP_GRACE = 5.0
PORT_ATTEMPTS = 3
_TAIL_LINES = 20
_MAX_LINE = 8192
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The stock server's message when SYNC_PORT is taken: "couldn't bind to ... (os error 98)".
_PORT_TAKEN = re.compile(r"(?i)address already in use|os error 98|couldn't bind")
_PR_SET_PDEATHSIG = 1
#: The worker's RUST_LOG (tracing's EnvFilter syntax). The stock server logs "finished
#: elap_ms=.. httpstatus=.." for every request from `anki::sync::http_server::logging`
#: (rslib/src/sync/http_server/logging.rs) at INFO; at WARN that module is silent. Everything
#: else stays at INFO: "listening", the context of every 4xx (`anki::sync::error`, e.g.
#: "decoding zstd body"), 5xx errors, "added filename" of media uploads. What the dropped line
#: held beyond the gateway's access line: the worker's own time, the client version, the
#: session id.
WORKER_LOG = "anki=info,anki::sync::http_server::logging=warn"
# Loaded before any fork: the child may only make the prctl call, not load libraries.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class WorkerKilledStarting(WorkerDied):
    """The worker was killed before it was ready (`death.reason` "memory"): retryable."""

    def __init__(self, death: Death) -> None:
        super().__init__(f"worker killed before it was ready: {death.detail}")
        self.death = death


def worker_env(
    *, account: str, secret: str, collections_dir: Path, port: int, max_payload_megs: int
) -> dict[str, str]:
    """The complete environment of a worker; nothing else from the gateway's leaks in."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "RUST_LOG": WORKER_LOG}
    for name in ("LANG", "LC_ALL", "HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(
        SYNC_USER1=f"{account}:{secret}",
        SYNC_BASE=str(collections_dir.absolute()),
        SYNC_HOST="127.0.0.1",
        SYNC_PORT=str(port),
        MAX_SYNC_PAYLOAD_MEGS=str(max_payload_megs),
    )
    return env


def free_port() -> int:
    # Racy by nature (the port is free only until someone else binds it); start_worker retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def probe_health(port: int, timeout: float = 1.0) -> bool:
    """True if 127.0.0.1:<port> answers `GET /health` with 200 within `timeout`."""
    try:
        return await asyncio.wait_for(_get_health(port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False


async def _get_health(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await reader.readline()
        return status.split(b" ")[1:2] == [b"200"]
    finally:
        writer.close()


def _in_child(parent: int, box: Box | None) -> Callable[[], None]:
    def preexec() -> None:
        # First into the box: nothing of the worker may run outside it (a failure here fails
        # the spawn).
        if box is not None:
            box.enter()
        if _LIBC is None:
            return
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The gateway may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class WorkerProcess:
    def __init__(
        self, account: str, port: int, proc: asyncio.subprocess.Process, box: Box | None = None
    ) -> None:
        self.account = account
        self.port = port
        self._proc = proc
        self._box = box
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        #: Set once we asked it to stop: the stock server answers SIGINT with a Python
        #: traceback ("Exception" from syncserver()), routine noise from then on.
        self._stopping = False
        assert proc.stdout is not None
        self._reader = asyncio.create_task(self._pump(proc.stdout))

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def tail(self) -> str:
        return " | ".join(self._tail)

    async def wait(self) -> None:
        """Returns once the process has exited (and was reaped)."""
        await asyncio.shield(self._proc.wait())

    async def exited(self, timeout: float) -> bool:
        """Whether the process exits within `timeout` seconds (a connection it broke can
        reach the gateway before its exit does)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), timeout)
        except asyncio.TimeoutError:
            return False
        await self._drain()  # its last lines tell why
        return True

    def death(self) -> Death | None:
        """Why it exited, if it exited without being asked to (module doc)."""
        if self.alive or self._stopping:
            return None
        if self._box is not None:
            return self._box.death(self.returncode, self.tail())
        return classify(self.returncode, self.tail())

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        # This task was created inside the request that started the worker and copied its
        # context; the worker outlives that request, so its lines carry no request id.
        request_id.set("")
        # Chunks, not readline(): a line over the stream limit must not kill the reader (a
        # full pipe would then block the worker).
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-_MAX_LINE:]
            for line in lines:
                self._emit(line)
        if pending:
            self._emit(pending)

    def _emit(self, raw: bytes) -> None:
        text = redact(_ANSI.sub("", raw[:_MAX_LINE].decode("utf-8", "replace")).rstrip())
        if text:
            self._tail.append(text)
            level = logging.DEBUG if self._stopping else logging.INFO
            log.log(level, "%s", text, extra={"account": self.account})

    async def wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self.alive:
                await self._drain()
                death = self.death()
                if death is not None and death.reason == "memory":
                    # Killed (its memory limit, the host's OOM killer): another start may
                    # well work, so 503 with Retry-After; a crash or an exit status is a fault
                    # every start would meet (502).
                    raise WorkerKilledStarting(death)
                raise WorkerFailed(
                    f"worker for {self.account} exited with {self.returncode} before it was "
                    f"ready: {self.tail()}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                # start_worker kills it (and removes its box), as for every failed start.
                raise WorkerTimeout(f"worker for {self.account} not ready after {timeout:g} s")
            # Alive after the 200 as well: a server that lost the port race may have let a
            # foreign server answer on "our" port.
            if await probe_health(self.port, min(0.5, remaining)) and self.alive:
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def _drain(self) -> None:
        # Output written just before exit is still in the pipe; read it for the error detail.
        # A grandchild holding the pipe open must not keep us here.
        if not self._reader.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
            except asyncio.TimeoutError:
                self._reader.cancel()

    def _signal(self, sig: int) -> None:
        # Only while not reaped: afterwards the pid (and group id) may belong to someone else.
        if not self.alive:
            return
        # The worker leads its own process group: a wrapper script's children get it too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def kill(self) -> None:
        self._signal(signal.SIGKILL)
        await self._proc.wait()
        await self._drain()
        if self._box is not None:
            self._box.remove()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGINT, then SIGKILL after `grace` seconds; returns once the process is reaped."""
        self._stopping = True
        if self.alive:
            self._signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self._proc.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("worker ignored SIGINT, killing it", extra={"account": self.account})
        await self.kill()


async def _spawn(
    command: Sequence[str], env: dict[str, str], box: Box | None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Own session: a Ctrl-C on the gateway's terminal must not stop workers behind its back.
        start_new_session=True,
        preexec_fn=_in_child(os.getpid(), box),
    )


async def start_worker(
    *,
    command: Sequence[str],
    account: str,
    secret: str,
    collections_dir: Path,
    max_payload_megs: int = 100,
    start_timeout: float = 15.0,
    boxes: Callable[[], Box] | None = None,
) -> WorkerProcess:
    """Start a worker on a free loopback port and wait until it is ready (see module doc);
    `boxes` makes a fresh box for each attempt (none: no containment)."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        env = worker_env(
            account=account,
            secret=secret,
            collections_dir=collections_dir,
            port=port,
            max_payload_megs=max_payload_megs,
        )
        try:
            box = boxes() if boxes is not None else None
        except OSError as exc:
            raise WorkerFailed(f"cannot make the worker's box: {exc.strerror}") from exc
        try:
            proc = await _spawn(command, env, box)
        except (OSError, subprocess.SubprocessError) as exc:
            if box is not None:
                box.remove()
            raise WorkerFailed(f"cannot run worker command {command[0]!r}: {exc}") from exc
        worker = WorkerProcess(account, port, proc, box)
        try:
            await worker.wait_ready(start_timeout)
        except BaseException as exc:
            # Exited, cancelled (the gateway is closing) or anything unexpected: no orphan, and
            # no box left behind (`kill()` reaps, then removes it).
            await asyncio.shield(worker.kill())
            if (
                isinstance(exc, WorkerFailed)
                and attempt < PORT_ATTEMPTS
                and _PORT_TAKEN.search(worker.tail())
            ):
                log.info("worker port %d was taken, retrying", port, extra={"account": account})
                continue
            raise
        return worker
    raise AssertionError("unreachable")
