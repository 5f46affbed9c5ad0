"""The real `anki` package as a sync client: what Anki desktop and AnkiDroid do, step by step.

Blocking calls (the anki backend is synchronous); tests run the gateway in another thread.
"""

from __future__ import annotations

import time
from pathlib import Path

from anki.collection import Collection
from anki.errors import SyncError, SyncErrorKind
from anki.sync_pb2 import SyncAuth, SyncCollectionResponse

Required = SyncCollectionResponse.ChangesRequired


class Client:
    """One device: a local collection folder plus the auth it got from logging in."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.col = Collection(str(folder / "collection.anki2"))
        self.auth: SyncAuth | None = None

    def close(self) -> None:
        self.col.close()

    def login(self, username: str, password: str, endpoint: str) -> SyncAuth:
        self.auth = self.col.sync_login(username=username, password=password, endpoint=endpoint)
        return self.auth

    def add_note(self, front: str, back: str = "back") -> None:
        note = self.col.new_note(self.col.models.by_name("Basic"))
        note["Front"] = front
        note["Back"] = back
        self.col.add_note(note, self.col.decks.id("Default"))

    def add_media(self, name: str, data: bytes) -> str:
        stored = self.col.media.write_data(name, data)
        self.add_note(f'media <img src="{stored}">')
        return stored

    def note_fronts(self) -> set[str]:
        return {self.col.get_note(nid)["Front"] for nid in self.col.find_notes("")}

    def sync(self, *, media: bool = True) -> int:
        """A normal sync as Anki runs it; does the full upload/download the server asks for.

        Returns what the server required (a `Required` value).
        """
        assert self.auth is not None, "log in first"
        out = self.col.sync_collection(self.auth, sync_media=False)
        if out.new_endpoint:
            self.auth.endpoint = out.new_endpoint
        required = out.required
        if required in (Required.FULL_SYNC, Required.FULL_UPLOAD, Required.FULL_DOWNLOAD):
            upload = required == Required.FULL_UPLOAD or (
                required == Required.FULL_SYNC and self.col.card_count() > 0
            )
            self.full_sync(upload=upload, server_usn=out.server_media_usn)
        if media:
            self.sync_media()
        return required

    def full_sync(self, *, upload: bool, server_usn: int | None = None) -> None:
        assert self.auth is not None
        self.col.close_for_full_sync()
        try:
            self.col.full_upload_or_download(auth=self.auth, server_usn=None, upload=upload)
        finally:
            self.col.reopen(after_full_sync=True)

    def sync_media(self, timeout: float = 60) -> None:
        assert self.auth is not None
        self.col.sync_media(self.auth)
        deadline = time.monotonic() + timeout
        while self.col.media_sync_status().active:
            if time.monotonic() > deadline:
                raise TimeoutError("media sync did not finish")
            time.sleep(0.05)
        # Raises if the media sync failed (the backend keeps the last error).
        self.col.media_sync_status()

    def media_bytes(self, name: str) -> bytes:
        return (Path(self.col.media.dir()) / name).read_bytes()


def is_auth_error(exc: BaseException) -> bool:
    """True when the client would log the user out ("Email or password was incorrect")."""
    return isinstance(exc, SyncError) and exc.kind == SyncErrorKind.AUTH
