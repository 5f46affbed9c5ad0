"""Local account names: safe folder names derived once from an identity, never changed.

The stock sync server stores a user's data in `SYNC_BASE/<name>/`, and a name such as `../x`
escapes `SYNC_BASE` (anki-sync-protocol.md). So every name the gateway hands a worker comes from
`base_name()` and passes `is_safe()`: lowercase ASCII letters, digits, `.`, `_`, `-`; starts with
a letter or digit; no `..`; at most `MAX_LENGTH` characters. Readable by default (`testuser` for
`testuser@example.com`, as the earlier system named folders); uniqueness is the registry's job,
which appends `-2`, `-3`, ... via `candidates()`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

MAX_LENGTH = 32
FALLBACK = "user"
_SAFE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def is_safe(name: str) -> bool:
    return (
        0 < len(name) <= MAX_LENGTH + 8  # room for a collision suffix
        and _SAFE.match(name) is not None
        and ".." not in name
        and not name.endswith((".", "-"))
    )


def slug(text: str) -> str:
    """Fold `text` to the safe alphabet; may return "" when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    lowered = ascii_text.lower()
    dashed = re.sub(r"[^a-z0-9._-]+", "-", lowered)
    collapsed = re.sub(r"[._-]{2,}", lambda m: "-" if "-" in m.group() else m.group()[0], dashed)
    return collapsed[:MAX_LENGTH].strip("._-")


def base_name(username: str, email: str | None) -> str:
    """The preferred name: the email's local part, else the username, else `user`.

    Pools that sign in by email give every user a UUID username; that is not readable, so the
    email wins whenever there is one.
    """
    for source in (email.rpartition("@")[0] if email and "@" in email else email, username):
        if source and not _UUID.match(source):
            name = slug(source)
            if name:
                return name
    return FALLBACK


def candidates(base: str) -> Iterator[str]:
    """`base`, then `base-2`, `base-3`, ... (never ending; the caller stops at a free one)."""
    yield base
    n = 2
    while True:
        yield f"{base}-{n}"
        n += 1
