"""How many gateway processes, and each one's share of the host-wide bounds. Pure.

    process_count(setting, cores, cluster) -> int   0: one per core (at least 1); a cluster
                                                    node (cluster.node_id set) runs one
    share(config, count) -> Config             the configuration one of `count` processes runs

A bound the operator set for the host is divided, rounded up, so `count` processes together
allow at most what one process allowed (plus count - 1 for the rounding): `workers.max_workers`
(memory: each worker is a stock server process), `server.max_requests_per_address` (a client
holding connections open), `auth.max_failures_per_user` / `_per_address` (password guessing:
connections land on any process, so the sum is what an attacker gets) and
`auth.recheck_calls_per_second` (the Cognito quota). A client whose requests all reach one
process meets its share sooner; the kernel spreads connections, not clients.
"""

from __future__ import annotations

import dataclasses
import math

from gateway.config import Config


def process_count(setting: int, cores: int, cluster: bool = False) -> int:
    if cluster:
        return 1  # config validation refuses processes > 1 with a cluster node id
    return setting if setting > 0 else max(1, cores)


def _part(total: int, count: int) -> int:
    return max(1, math.ceil(total / count))


def share(config: Config, count: int) -> Config:
    if count <= 1:
        return config
    server, auth, workers = config.server, config.auth, config.workers
    return dataclasses.replace(
        config,
        server=dataclasses.replace(
            server, max_requests_per_address=_part(server.max_requests_per_address, count)
        ),
        auth=dataclasses.replace(
            auth,
            max_failures_per_user=_part(auth.max_failures_per_user, count),
            max_failures_per_address=_part(auth.max_failures_per_address, count),
            recheck_calls_per_second=auth.recheck_calls_per_second / count,
        ),
        workers=dataclasses.replace(
            workers,
            max_workers=_part(workers.max_workers, count),
            max_answers_on_disk=_part(workers.max_answers_on_disk, count),
        ),
    )
