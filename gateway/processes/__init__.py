"""Several gateway processes serving one port: `serve` starts them, watches them, stops them.

    serve(config, provider=None) -> int     exit status; `provider` makes the identity provider
                                            in each process (local mode's stand-in keeper)

`server.processes` (0: one per CPU core this process may run on; 1: one process, exactly as
before: no child, no supervisor) decides how many; a cluster node (cluster.node_id) runs one
(its leases, heartbeat and fencing are per process: not designed for several yet). With more
than one:

- Start-up work that must happen once happens here, in the parent, before any child exists:
  the gateway secret is created (credentials.py), the registry opened once (SQLite creates or
  migrates its schema; DynamoDB is checked), the listening sockets bound (listeners.py: a port
  in use fails here, once, as it did with one process).
- Each child serves its own SO_REUSEPORT socket on the same port, so the kernel spreads new
  connections between them (listeners.py says why not one shared socket), and the metrics
  socket, bound once, shared by all.
- Host-wide bounds are shared out (share.py): `workers.max_workers`, the per-address in-flight
  bound and the login failure limits, so N processes together allow what one did.
- /metrics: counters and histograms of every process, summed (prometheus_client's
  multiprocess mode, its files in a private temporary folder removed on exit); worker gauges
  are summed over the live processes.
- supervisor.py: SIGTERM or SIGINT to the parent stops every child cleanly (each stops its
  workers) and the parent exits 0; a child that dies after it has served is restarted on its
  socket; a child that dies during start-up stops them all with exit status 1 (its fault —
  configuration, permissions — would recur at every restart).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.processes.share import process_count

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.identity.provider import IdentityProvider

#: prometheus_client reads it when it is first imported (its multiprocess mode).
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(config: Config, provider: Callable[[], IdentityProvider] | None = None) -> int:
    count = process_count(
        config.server.processes, len(os.sched_getaffinity(0)), config.cluster.enabled
    )
    if count == 1:
        from gateway.app import run

        run(config, provider)
        return 0
    from gateway.processes.supervisor import serve_several

    return serve_several(config, count, provider)
