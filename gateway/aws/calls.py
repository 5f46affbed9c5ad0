"""One boto3 call on a thread pool, its failure mapped to one small error.

boto3 blocks, so each client's calls run in a bounded thread pool of their own; the event loop
never waits on AWS.

    AwsCalls(client, threads=N, name="registry")
                         the calls of one client (thread names start with `name`); the client
                         is shared by the threads (boto3 clients are thread-safe)
    await calls.run(operation, expected=(), **params) -> dict
                         `client.<operation>(**params)` in the pool. A ClientError whose code is
                         in `expected` is raised as it is: it is the caller's answer (e.g.
                         ConditionalCheckFailedException), not a failure
    await calls.close(wait=True)
                         wait: calls already queued finish first (each bounded by botocore's
                         timeouts), so no thread still uses the client; else they are dropped.
                         Later calls fail with kind "closed". The client is the caller's to close

Errors: every other failure is one `AwsCallFailed`, never chained to botocore's exception (whose
text can quote parameters: passwords, keys), with `.operation` and `.kind`:
    "refused"      the service answered with an error: `.code` its error code
                   (ThrottlingException, ResourceNotFoundException, ...), `.status` the HTTP
                   status, `.message` its message (first 300 characters: it may echo inputs,
                   so scrub before showing it)
    "unreachable"  after botocore's retries: refused, reset, DNS, TLS, connect or read timeout,
                   closed mid-answer (`.code` botocore's class name)
    "setup"        this gateway's side: no credentials or region, bad parameters (`.code`
                   botocore's class name only: some messages quote parameter values)
    "closed"       the pool is shut down: the gateway is stopping
Each caller maps these to its own error (identity/cognito.py, registry/tablecalls.py,
cluster/dynamo.py, portal/directory.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

REFUSED, UNREACHABLE, SETUP, CLOSED = "refused", "unreachable", "setup", "closed"


class AwsCallFailed(Exception):
    def __init__(
        self,
        operation: str,
        kind: str,
        code: str,
        *,
        status: int | None = None,
        message: str = "",
    ) -> None:
        super().__init__(f"{operation}: {kind} ({code})")
        self.operation = operation
        self.kind = kind
        self.code = code
        self.status = status
        self.message = message


def failure(operation: str, exc: Exception) -> AwsCallFailed:
    """What a boto3 exception (ClientError or BotoCoreError) says, as an `AwsCallFailed`."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return AwsCallFailed(
            operation,
            REFUSED,
            str(error.get("Code", "")),
            status=exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            message=str(error.get("Message", ""))[:300],
        )
    reachable = not isinstance(exc, (BotoConnectionError, HTTPClientError))
    return AwsCallFailed(operation, SETUP if reachable else UNREACHABLE, type(exc).__name__)


class AwsCalls:
    def __init__(self, client: Any, *, threads: int, name: str) -> None:
        self.client = client
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, operation: str, expected: Collection[str] = (), **params: Any) -> Any:
        method = functools.partial(getattr(self.client, operation), **params)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, method)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in expected:
                raise
            failed = failure(operation, exc)
        except BotoCoreError as exc:
            failed = failure(operation, exc)
        except RuntimeError:  # "cannot schedule new futures after shutdown"
            failed = AwsCallFailed(operation, CLOSED, "closed")
        # Raised outside the except blocks: botocore's exception is not chained into tracebacks.
        raise failed

    async def close(self, *, wait: bool = True) -> None:
        if wait:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
        else:
            self._executor.shutdown(wait=False, cancel_futures=True)
