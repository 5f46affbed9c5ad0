"""An account's deletion allowance while its collection is over its limit, shared by every
gateway process on the data folder: one small file in the account folder, read and written
under an exclusive flock (as quota/mediatotal.py).

    allowance = GraveAllowance(folder)     folder: the account's folder
    allowance.spend(ids, live) -> bool     a graves body of `ids` ids (quota/graves.py) to a
                                           collection using `live` bytes now (livesize.py):
                                           True and counted if it fits, False (nothing
                                           counted) if not
    allowance.clear()                      the collection is under its limit: the file goes
    State.spend(ids, live) -> bool         the pure rule

`<folder>/.gateway-graves-allowance` holds JSON `{"spent": ids, "floor": bytes}`: the ids sent
in graves since the stretch began, and the smallest live size seen since. The rule: a body
passes while `spent + ids <= IDS`; a live size under `floor` (the collection really shrank:
deletions of notes that existed took effect) starts a new stretch (`spent` 0, `floor` the new
size). So while an account stays over its limit its collection never takes more than `floor +
IDS` graves, and `floor` never rises: graves of made-up ids can grow a collection over its
limit by at most `IDS` x about 29 bytes (measured on the stock server, quota/graves.py):
100,000 ids, about 3 MB, per stretch, and a new stretch needs a real shrink below the last
floor first. Ids are counted when they are sent, not when a sync commits: a sync the client
aborts (the server rolls it back) still spent them.

`IDS` fits real deletions: a note sends its id and its cards' ids, so 100,000 is 50,000 notes
of one card or 33,000 of two in one sync; a user deleting more does it in steps (each sync
that commits real deletions shrinks the collection, which starts a new stretch).

Errors: an unreadable, oversized or foreign file counts as a new stretch (nothing spent): a
user cannot forge it (the account folder is the gateway's). No account folder: the body passes
uncounted (there is no collection to grow).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = ".gateway-graves-allowance"
#: Grave ids an account over its collection limit may send per stretch (module doc).
IDS = 100_000
#: More than this is not ours.
MAX_BYTES = 256


@dataclass
class State:
    """The file's content (pure: no I/O). `floor` None: no stretch yet."""

    spent: int = 0
    floor: int | None = None

    def spend(self, ids: int, live: int) -> bool:
        if self.floor is None or live < self.floor:
            self.spent, self.floor = 0, live
        if self.spent + ids > IDS:
            return False
        self.spent += ids
        return True


def decode(raw: bytes) -> State:
    try:
        data = json.loads(raw)
        spent, floor = int(data["spent"]), int(data["floor"])
    except (ValueError, TypeError, KeyError, OverflowError):
        return State()
    return State(max(spent, 0), floor) if floor >= 0 else State()


def encode(state: State) -> bytes:
    return json.dumps({"spent": state.spent, "floor": state.floor}).encode()


class GraveAllowance:
    def __init__(self, folder: Path) -> None:
        self._path = folder / FILE_NAME

    def spend(self, ids: int, live: int) -> bool:
        with self._locked() as state:
            return state.spend(ids, live)

    def clear(self) -> None:
        self.clear_file(self._path)

    @staticmethod
    def clear_file(path: str | Path) -> None:
        """Forget the allowance kept at `path` (the account folder's `FILE_NAME`)."""
        try:  # on every sync/meta: no context manager object for it
            os.unlink(path)
        except OSError:
            pass

    @contextlib.contextmanager
    def _locked(self) -> Iterator[State]:
        """The state under the file's lock, written back when the block ends without error."""
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:  # no account folder: nothing to keep
            yield State()
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, MAX_BYTES + 1, 0)
            state = decode(raw) if len(raw) <= MAX_BYTES else State()
            yield state
            data = encode(state)
            if data != raw.rstrip(b" "):
                # In place, padded to the old length: never cut to 0 (mediatotal.py's reason).
                os.pwrite(fd, data.ljust(min(len(raw), MAX_BYTES), b" "), 0)
                if len(raw) > MAX_BYTES:
                    os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
