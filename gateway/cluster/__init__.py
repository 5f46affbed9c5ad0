"""Several gateway nodes serving one set of accounts (issue 12). Off unless `cluster.node_id`
is set: a single gateway builds none of this and its request path does not change.

    placement.py   pure: nodes, owner items, `decide()` (serve, forward, place, take over, down)
    signing.py     pure: node-to-node request signatures
    directory.py   the directory interface (heartbeat and owner items), `dynamo.py`, `sqlite.py`
    router.py      this node's heartbeat, and `route(sub)` for every admitted request
    internal.py    the internal routes other nodes forward to, and the login call to an owner
    move.py        `accounts move` between nodes' disks (copy.py: the checked archive)
    erase.py       a deleted account's folder erased on its owner node

`open_cluster(config, secret, load)` builds and starts it; `Cluster.close()` stops it.
Terms: an *ownership lease* is a node's claim on an account (not `WorkerPool.lease()`, which
borrows a worker for one request).
"""

from gateway.cluster.opening import adopt_folders, close_cluster, directory_for, open_cluster

__all__ = ["adopt_folders", "close_cluster", "directory_for", "open_cluster"]
