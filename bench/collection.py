"""A deterministic Anki collection of a chosen size, for full uploads and downloads.

Notes of the stock "Basic" type whose Back field is base64 of seeded random bytes: text that
zstd cannot shrink much (about 75 % of its size stays), as big as a heavy real collection. The
same seed and size give the same note contents (ids and timestamps come from the clock).
"""

from __future__ import annotations

import base64
import random
import shutil
from pathlib import Path

from anki.collection import AddNoteRequest, Collection

#: Random bytes per note; as base64 about 10 KB of text, ~10.4 KB on disk per note with cards.
NOTE_BYTES = 7500
BYTES_PER_NOTE_ON_DISK = 10_425


def make(folder: Path, megabytes: float, seed: int = 5, *, compressible: bool = False) -> Path:
    """`folder/collection.anki2` of about `megabytes` MB (10^6 bytes); returns its path.
    `compressible`: each Back field is a quarter random base64, repeated four times, so zstd
    shrinks the file about 4:1 instead of 4:3."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "collection.anki2"
    col = Collection(str(path))
    try:
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        model = col.models.by_name("Basic")
        deck = col.decks.id("Default")
        assert model is not None and deck is not None
        requests = []
        for i in range(max(1, round(megabytes * 1e6 / BYTES_PER_NOTE_ON_DISK))):
            note = col.new_note(model)
            note["Front"] = f"bench note {i:06d} {rng.randbytes(12).hex()}"
            if compressible:
                note["Back"] = base64.b64encode(rng.randbytes(NOTE_BYTES // 4)).decode() * 4
            else:
                note["Back"] = base64.b64encode(rng.randbytes(NOTE_BYTES)).decode()
            requests.append(AddNoteRequest(note=note, deck_id=deck))
        col.add_notes(requests)
    finally:
        col.close(downgrade=False)
    return path


def copy_to(source: Path, folder: Path) -> Path:
    """A fresh client folder holding a copy of `source` (a client owns its own file)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    target = folder / "collection.anki2"
    shutil.copyfile(source, target)
    return target
