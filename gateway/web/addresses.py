"""Requests in flight per client address, bounded: one address cannot hold every connection.

Each open connection is in one of three states: sending headers (closed after
`server.header_timeout_seconds`, connections.py), idle between requests (closed after
`server.keepalive_seconds`), or in a request. The last is the only one that lasts, so bounding
requests in flight per address (`server.max_requests_per_address`) bounds the connections one
address holds for longer than the keep-alive time; behind a reverse proxy, where every
connection comes from the proxy, the address is the client's own from `X-Forwarded-For`
(app.client_address).

Pure bookkeeping: `enter()` says whether one more request from `address` may start; every
admitted request must `leave()`.
"""

from __future__ import annotations


class InFlight:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    def enter(self, address: str) -> bool:
        count = self._counts.get(address, 0)
        if count >= self._limit:
            return False
        self._counts[address] = count + 1
        return True

    def leave(self, address: str) -> None:
        count = self._counts.get(address, 0) - 1
        if count > 0:
            self._counts[address] = count
        else:
            self._counts.pop(address, None)

    def __len__(self) -> int:
        """Addresses with a request in flight (memory stays bounded by what is in flight)."""
        return len(self._counts)
