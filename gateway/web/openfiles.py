"""The open-file limit: every client connection, upstream connection and worker pipe is a file
descriptor, and the usual soft limit (1024) is reached long before the hard one."""

from __future__ import annotations

import resource


def raise_soft_limit() -> tuple[int, int]:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit; `(before, after)`.

    Workers inherit it. An unlimited hard limit stays as it is (the kernel caps it anyway);
    a refusal (a sandbox) keeps the old limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard
