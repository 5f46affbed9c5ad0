"""Retention: which accounts have been unused long enough to be removed (unused.py, pure),
the `accounts prune` command that removes them (prune.py), and its gauges (gauges.py)."""

from gateway.retention.unused import DAY, inactive, last_seen

__all__ = ["DAY", "inactive", "last_seen"]
