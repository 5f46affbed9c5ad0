"""What a collection over its limit may still sync: whether a normal sync request adds to the
collection. Pure: a method and its inflated body in, a verdict out.

    INSPECTED                      the methods whose bodies can add: sync/applyChanges, applyChunk
    adds(method, body) -> str | None   what the body adds ("notes", "decks", ...), None: nothing
    MAX_BODY                       inflated bytes a body may have and still be read here

Seen on the wire from the anki 26.9 client (docs/users/quotas.md):

- a sync that only deletes sends its deletions in `start`'s and `applyGraves`' graves, then
  `applyChanges` {"changes": {"models": [], "decks": [[], []], "tags": [], "conf": {...},
  "crt": n}} and `applyChunk` {"chunk": {"done": true}};
- a review adds a deck (its day's counters) to `applyChanges` and a revlog row and the card to
  `applyChunk`; a new note adds the note and its cards to `applyChunk`.

So `meta`, `chunk`, `sanityCheck2`, `finish` and `abort` never add (a full download,
`sync/download`, writes nothing on the server). `start` and `applyGraves` add a grave for each
id they carry: graves.py counts them, allowance.py bounds them. `applyChanges` adds with any note
type, deck, deck option group or tag; its `conf` (the collection's settings, sent whole by every
sync that changes anything) passes, within `MAX_BODY`. `applyChunk` adds with any note, card or
review row: a changed row counts, since an edit can make a note any size. A body that is not
JSON of that shape, or larger than `MAX_BODY`, counts as adding.
"""

from __future__ import annotations

import json
from typing import Any

INSPECTED = frozenset({"sync/applyChanges", "sync/applyChunk"})
#: A deletion's `applyChanges` is about 1 KB (the settings); settings written by add-ons make
#: it larger. Small enough to read whole, and bounds what settings a sync over the limit adds.
MAX_BODY = 32 * 1024

#: Field -> what it adds, in the order a refusal names them.
_CHANGES = (("models", "note types"), ("tags", "tags"))
_CHUNK = (("notes", "notes"), ("cards", "cards"), ("revlog", "reviews"))


def adds(method: str, body: bytes) -> str | None:
    if method not in INSPECTED:
        return None
    if len(body) > MAX_BODY:
        return "too much"
    try:
        data = json.loads(body)
    except ValueError:
        return "unreadable"
    if method == "sync/applyChanges":
        return _changes(data.get("changes") if isinstance(data, dict) else None)
    return _chunk(data.get("chunk") if isinstance(data, dict) else None)


def _changes(changes: Any) -> str | None:
    if not isinstance(changes, dict):
        return "unreadable"
    found = _named(changes, _CHANGES)
    decks = changes.get("decks", [[], []])
    if not (isinstance(decks, list) and all(isinstance(d, list) for d in decks)):
        return "unreadable"
    if any(decks):
        found.append("decks")
    return ", ".join(found) or None


def _chunk(chunk: Any) -> str | None:
    if not isinstance(chunk, dict):
        return "unreadable"
    return ", ".join(_named(chunk, _CHUNK)) or None


def _named(data: dict[str, Any], fields: tuple[tuple[str, str], ...]) -> list[str]:
    found = []
    for field, name in fields:
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, list):
            return ["unreadable"]
        if value:
            found.append(name)
    return found
