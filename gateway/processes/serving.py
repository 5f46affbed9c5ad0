"""`serve(config, provider)`: one process, or several under the supervisor (package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.processes.share import process_count, usable_cores

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.identity.provider import IdentityProvider


def serve(config: Config, provider: Callable[[], IdentityProvider] | None = None) -> int:
    count = process_count(config.server.processes, usable_cores(), config.cluster.enabled)
    if count == 1:
        from gateway.app import run

        run(config, provider)
        return 0
    from gateway.processes.supervisor import serve_several

    return serve_several(config, count, provider)
