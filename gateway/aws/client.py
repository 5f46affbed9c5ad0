"""boto3 clients as the gateway makes them: a session of their own, bounded timeouts and
connections, botocore's standard retries (3 tries in all)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig


def make(
    service: str,
    *,
    region: str,
    endpoint_url: str,
    connect_timeout: float,
    read_timeout: float,
    max_concurrency: int,
) -> Any:
    """A thread-safe client for `service` (creating one takes ~100 ms: make one per process).
    Timeouts in seconds; `max_concurrency` HTTP connections; `endpoint_url` "" for AWS's own."""
    config = BotoConfig(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_concurrency,
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    # A session of its own: boto3's default session is not thread-safe.
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint_url or None, config=config
    )
