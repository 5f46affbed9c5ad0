"""Build an Anki collection package from a copy of an account's files, with Anki's own exporter.

    build(copy, out) -> None        copy/collection.anki2 and copy/media/* in; `out` written
        raises ExporterError (the anki backend refused: a damaged collection), OSError

The stock server keeps media in `<account>/media/` (and its own `media.db`); a desktop profile
keeps them in `collection.media/` next to `collection.anki2`, which is where the `anki` package's
`Collection.export_collection_package` reads them from (every file in that folder goes into the
package). So the copy's media folder is renamed to that, the collection opened and exported in
the current format (legacy=False: zstd-compressed, what Anki 2.1.50+ writes and imports), and
the collection closed. Only ever run on a private copy: opening a collection may upgrade it.
"""

from __future__ import annotations

from pathlib import Path


class ExporterError(Exception):
    pass


def build(copy: Path, out: Path) -> None:
    from anki.collection import Collection
    from anki.errors import AnkiException

    media = copy / "media"
    desktop_media = copy / "collection.media"
    if media.is_dir():
        media.rename(desktop_media)
    else:
        desktop_media.mkdir()
    (copy / "media.db").unlink(missing_ok=True)  # the server's; the package lists the folder
    try:
        col = Collection(str(copy / "collection.anki2"))
    except AnkiException as exc:
        raise ExporterError(f"cannot open the collection: {type(exc).__name__}") from None
    try:
        col.export_collection_package(str(out), include_media=True, legacy=False)
    except AnkiException as exc:
        raise ExporterError(f"the exporter refused: {type(exc).__name__}") from None
    finally:
        col.close()
