"""How many deletions ("graves") a sync request carries. Pure: a method and its inflated body
in, a count out.

    INSPECTED                         the methods whose bodies carry graves: sync/start
                                      (`graves`), sync/applyGraves (`chunk`)
    count(method, body) -> int | None the ids in the body's graves (cards, notes and decks
                                      together); None: not a body of that shape
    MAX_BODY                          inflated bytes a graves body may have while the
                                      collection is over its limit

Why they count: the stock server keeps a row in its `graves` table for every id it is sent,
whether such a note, card or deck exists or not (measured: 300,000 made-up note ids in one
applyGraves grew collection.anki2 from 4 KB to 8.7 MB, about 29 bytes an id). A sync that
"only deletes" can therefore grow a collection without bound (quota/allowance.py bounds it).

Seen from the anki 26.9 client (tests/quota/test_graves_e2e.py): `start` carries `"graves":
null`; the deletions come in `applyGraves` bodies of at most 250 ids each (a deleted note sends
its id and each of its cards' ids), about 4 KB inflated, so `MAX_BODY` (32 KiB: some 2,300
ids of 13 digits) passes every one. A body that is not JSON of the shape, or whose lists hold
anything but integers, is None (refused while over the limit).
"""

from __future__ import annotations

import json
from typing import Any

INSPECTED = frozenset({"sync/start", "sync/applyGraves"})
MAX_BODY = 32 * 1024

#: The body's field holding the graves, by method.
_FIELD = {"sync/start": "graves", "sync/applyGraves": "chunk"}
_KINDS = ("cards", "notes", "decks")


def count(method: str, body: bytes) -> int | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or method not in _FIELD:
        return None
    graves = data.get(_FIELD[method])
    if graves is None:
        return 0 if method == "sync/start" else None
    return _ids(graves)


def _ids(graves: Any) -> int | None:
    if not isinstance(graves, dict):
        return None
    total = 0
    for kind in _KINDS:
        ids = graves.get(kind, [])
        if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
            return None
        total += len(ids)
    return total


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
