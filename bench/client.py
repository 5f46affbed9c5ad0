"""The real `anki` client, as Anki desktop drives it, with the timings the benchmark needs.

Blocking calls; the Rust backend releases the GIL, so clients in threads sync in parallel.
"""

from __future__ import annotations

import time
from pathlib import Path

from anki.collection import Collection
from anki.sync_pb2 import SyncAuth, SyncCollectionResponse

Required = SyncCollectionResponse.ChangesRequired
FULL = (Required.FULL_SYNC, Required.FULL_UPLOAD, Required.FULL_DOWNLOAD)


class Client:
    """One device: a collection file plus the auth it got from logging in."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.col = Collection(str(folder / "collection.anki2"))
        self.auth: SyncAuth | None = None

    def close(self) -> None:
        self.col.close()

    def login(self, username: str, password: str, endpoint: str) -> SyncAuth:
        self.auth = self.col.sync_login(username=username, password=password, endpoint=endpoint)
        return self.auth

    def auth_for(self, endpoint: str) -> SyncAuth:
        """The same host key sent to another endpoint (the key is the worker's own)."""
        assert self.auth is not None
        return SyncAuth(hkey=self.auth.hkey, endpoint=endpoint)

    def full_transfer(self, auth: SyncAuth, *, upload: bool) -> float:
        """One full upload or download; returns the seconds the transfer call took."""
        self.col.close_for_full_sync()
        try:
            started = time.perf_counter()
            self.col.full_upload_or_download(auth=auth, server_usn=None, upload=upload)
            return time.perf_counter() - started
        finally:
            self.col.reopen(after_full_sync=True)

    def add_notes(self, fronts: list[str]) -> None:
        model = self.col.models.by_name("Basic")
        assert model is not None
        for front in fronts:
            note = self.col.new_note(model)
            note["Front"] = front
            note["Back"] = "back"
            self.col.add_note(note, self.col.decks.id("Default") or 1)

    def add_media(self, name: str, data: bytes) -> None:
        stored = self.col.media.write_data(name, data)
        self.add_notes([f'media <img src="{stored}">'])

    def sync(self, *, media: bool = True, timeout: float = 120) -> int:
        """A sync as Anki runs it (full transfer if the server asks); returns what was required."""
        assert self.auth is not None
        out = self.col.sync_collection(self.auth, sync_media=False)
        if out.new_endpoint:
            self.auth.endpoint = out.new_endpoint
        if out.required in FULL:
            upload = out.required == Required.FULL_UPLOAD or (
                out.required == Required.FULL_SYNC and self.col.card_count() > 0
            )
            self.full_transfer(self.auth, upload=upload)
        if media:
            self.col.sync_media(self.auth)
            deadline = time.monotonic() + timeout
            while self.col.media_sync_status().active:
                if time.monotonic() > deadline:
                    raise TimeoutError("media sync did not finish")
                time.sleep(0.02)
            self.col.media_sync_status()  # raises if the media sync failed
        return out.required
