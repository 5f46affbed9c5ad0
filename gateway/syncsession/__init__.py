"""At most one collection sync per account through the gateway (issue 21).

- rules.py: the pure state machine (what the stock server does alone, and the gateway's rule);
- store.py: the lease, in a file of the account folder every gateway process shares;
- guard.py: what the proxy calls around each request it sends to a worker.
"""

from gateway.syncsession.guard import SessionGuard, Turn

__all__ = ["SessionGuard", "Turn"]
