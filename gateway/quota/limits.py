"""An account's storage limits and the messages a stock Anki client shows when one is reached.
Pure: sizes in, limits and verdicts out (no I/O).

Sizes are bytes; settings and overrides are in MB (1,000,000 bytes, the unit Anki and phones
show). A limit of `None` is unlimited.

    Limits(collection_upload, collection, media, media_file)   bytes or None each
    Override(collection_upload_megs, collection_megs, media_megs, media_file_megs)
                        one account's operator override: None = the configured default,
                        0 = unlimited, n = n MB (stored in the registry)
    Limits.from_megs(...), limits.with_override(override)
    OverQuota(message)  a limit is reached; `message` is for the user (Anki shows it)

The defaults are AnkiWeb's published figures (a collection of 100 MB compressed / 250 MB
uncompressed, a media file of 100 MB); AnkiWeb publishes no media total, so that default is
this gateway's own (config/schema.py `QuotaConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import QuotaConfig

MB = 1_000_000


class OverQuota(Exception):
    """A storage limit is reached. `str()` is the message for the user (no secret, no path)."""


@dataclass(frozen=True)
class Override:
    """One account's limits as the operator set them, in MB: None = the configured default,
    0 = unlimited."""

    collection_upload_megs: int | None = None
    collection_megs: int | None = None
    media_megs: int | None = None
    media_file_megs: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{f.name} must be a whole number of MB >= 0, or None")


def _bytes(megs: int | None) -> int | None:
    return None if not megs else megs * MB


@dataclass(frozen=True)
class Limits:
    """Bytes, None = unlimited: a full upload's body as sent (`collection_upload`) and
    inflated (`collection`, also the collection file on disk), all media files together
    (`media`), one media file (`media_file`)."""

    collection_upload: int | None = None
    collection: int | None = None
    media: int | None = None
    media_file: int | None = None

    @classmethod
    def from_megs(
        cls,
        collection_upload_megs: int = 0,
        collection_megs: int = 0,
        media_megs: int = 0,
        media_file_megs: int = 0,
    ) -> Limits:
        """Limits from MB figures, 0 = unlimited (the configuration's form)."""
        return cls(
            _bytes(collection_upload_megs),
            _bytes(collection_megs),
            _bytes(media_megs),
            _bytes(media_file_megs),
        )

    def with_override(self, override: Override) -> Limits:
        """These limits with the operator's override applied field by field."""
        values = {}
        for f in fields(self):
            megs = getattr(override, f.name + "_megs")
            values[f.name] = getattr(self, f.name) if megs is None else _bytes(megs)
        return Limits(**values)


def quota_limits(settings: QuotaConfig) -> Limits:
    """The default `Limits`: the configuration's `quota` section."""
    return Limits.from_megs(
        settings.collection_upload_megs,
        settings.collection_megs,
        settings.media_megs,
        settings.media_file_megs,
    )


def megs_text(size: int) -> str:
    """1_234_567 -> "1.2 MB" (as the limits are set)."""
    return f"{size / MB:.1f} MB"


def check_upload(limits: Limits, compressed: int, inflated: int) -> None:
    """A full upload (`sync/upload`) of `compressed` bytes so far, inflating to `inflated`."""
    if limits.collection_upload is not None and compressed > limits.collection_upload:
        raise OverQuota(
            f"Your collection is larger than this server's limit of "
            f"{megs_text(limits.collection_upload)} (compressed). Make it smaller, then sync "
            f"again."
        )
    if limits.collection is not None and inflated > limits.collection:
        raise OverQuota(
            f"Your collection is larger than this server's limit of "
            f"{megs_text(limits.collection)}. Make it smaller, then sync again."
        )


def check_collection(limits: Limits, live: int) -> None:
    """A normal sync that adds to a collection using `live` bytes on the server now (its live
    pages: quota/livesize.py); deletions still sync while it is over (quota/growth.py)."""
    if limits.collection is not None and live > limits.collection:
        raise OverQuota(over_collection(limits, live))


def over_collection(limits: Limits, live: int, graves: bool = False) -> str:
    """The message for a sync refused while the collection uses `live` bytes, over its limit:
    one that adds, or (`graves`) one whose deletions are past the allowance (quota/allowance.py)."""
    over = (
        f"Your collection on this server is {megs_text(live)}, over its limit of "
        f"{megs_text(limits.collection or 0)}. "
    )
    if graves:
        return over + (
            "This sync sends more deletions than this server takes while your collection is "
            "over its limit, so nothing was synced. Check Database (Tools menu) and upload your "
            "collection (force a one-way sync in the preferences), or ask this server's "
            "operator for more room."
        )
    return over + (
        "Deletions still sync, but this sync also adds (notes, cards, reviews, decks, note "
        "types or tags), so nothing was synced. Delete what you no longer need and upload your "
        "collection, or ask this server's operator for more room."
    )


def check_media_file(limits: Limits, name: str, size: int) -> None:
    """One media file of `size` bytes in an upload. `name` is the file's name as Anki knows it."""
    if limits.media_file is not None and size > limits.media_file:
        raise OverQuota(
            f"The media file {name!r} is {megs_text(size)}, over this server's limit of "
            f"{megs_text(limits.media_file)} per file. Remove it from your notes "
            f"(Tools > Check Media) and sync again."
        )


def check_media_total(limits: Limits, total: int) -> None:
    """The account's media would take `total` bytes once an upload is applied."""
    if limits.media is not None and total > limits.media:
        raise OverQuota(
            f"Your media would take {megs_text(total)}, over this server's limit of "
            f"{megs_text(limits.media)}. Delete unused media (Tools > Check Media) and sync "
            f"again."
        )
