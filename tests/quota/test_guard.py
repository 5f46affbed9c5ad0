"""The checks the proxy runs (quota/guard.py), on real folders and real zstd bodies."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
import zstandard

from gateway import protocol
from gateway.quota.guard import MediaCheck, QuotaGuard, stored_size
from gateway.quota.limits import MB, Limits, OverQuota
from gateway.quota.mediatotal import FILE_NAME, MediaTotal, State, encode
from gateway.registry.base import Account
from gateway.uploads.mediazip import MediaZipCheck
from gateway.uploads.payload import PayloadLimits, PayloadMeter
from tests.quota.test_meta_sizes import stock_zip


def account(**quota: int | None) -> Account:
    fields = {f"quota_{k}": v for k, v in quota.items()}
    return Account("sub", "bob", "bob", None, "active", 0.0, 0.0, **fields)


def held(folder: Path, size: int) -> MediaTotal:
    """The account in `folder` with `size` media bytes counted (walked just now)."""
    (folder / FILE_NAME).write_bytes(encode(State(size, time.time())))
    return MediaTotal(folder)


def feed(check: MediaCheck, body: bytes) -> None:
    zip_check = MediaZipCheck(check.on_meta)  # as the payload meter runs it
    for i in range(0, len(body), 1000):
        zip_check.feed(body[i : i + 1000])


def test_the_total_counts_replaced_and_deleted_files_once(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "old.jpg").write_bytes(b"o" * 400)
    (media / "gone.gif").write_bytes(b"g" * 300)
    limits = Limits(media=1000)
    # 700 held; old.jpg 400 -> 600, gone.gif deleted, new.png 300 added: 900.
    check = MediaCheck(limits, media, held(media.parent, 700))
    feed(check, stock_zip({"old.jpg": b"n" * 600, "new.png": b"p" * 300}, ("gone.gif",)))
    assert check.total == 900
    # One byte more is over.
    check = MediaCheck(limits, media, held(media.parent, 801))
    with pytest.raises(OverQuota, match="Your media would take"):
        feed(check, stock_zip({"old.jpg": b"n" * 600, "new.png": b"p" * 300}, ("gone.gif",)))


def test_an_upload_that_frees_room_passes_while_the_account_is_over(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "a").write_bytes(b"a" * 500)
    (media / "b").write_bytes(b"b" * 500)
    over = MediaCheck(Limits(media=100), media, held(media.parent, 1000))
    feed(over, stock_zip({}, ("a",)))
    assert over.total == 500
    shrink = MediaCheck(Limits(media=100), media, held(media.parent, 1000))
    feed(shrink, stock_zip({"b": b"x" * 400}))
    assert shrink.total == 900
    grow = MediaCheck(Limits(media=100), media, held(media.parent, 1000))
    with pytest.raises(OverQuota):
        feed(grow, stock_zip({"b": b"x" * 501}))


@pytest.mark.parametrize("name", ["../secret", "a/b", "..", ".", "", "a\\b", "nul\0"])
def test_names_that_leave_the_media_folder_count_as_no_file(tmp_path, name):
    (tmp_path / "secret").write_bytes(b"s" * 10)
    media = tmp_path / "media"
    media.mkdir()
    assert stored_size(media, name) == 0


def test_a_refusal_from_the_inflated_bytes_stops_the_meter_and_every_later_chunk():
    limits = Limits(media_file=MB)
    check = MediaCheck(limits, Path("/nonexistent"), MediaTotal(Path("/nonexistent")))
    body = zstandard.ZstdCompressor().compress(stock_zip({"big.bin": b"\1" * (MB + 1)}))
    meter = PayloadMeter(PayloadLimits.from_megs(100), media_zip=True, on_meta=check.on_meta)
    with pytest.raises(OverQuota, match="big.bin"):
        meter.feed(body)
    with pytest.raises(Exception, match="already refused"):
        meter.feed(b"more")


async def test_the_media_total_is_walked_once_then_moved_on_by_each_upload_it_let_in(tmp_path):
    now = [1_000_000.0]
    folder = tmp_path / "bob"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "a").write_bytes(b"a" * 100)
    guard = QuotaGuard(Limits(media=10_000), lambda a: folder, clock=lambda: now[0])
    check = await guard.media(account())
    feed(check, stock_zip({"b": b"b" * 50}))
    check.done(applied=True)
    (folder / "media" / "c").write_bytes(b"c" * 1000)  # not seen until the next walk
    assert MediaTotal(folder).current() == 150
    # One the worker did not take is taken back; one arriving meanwhile saw it counted.
    dropped, meanwhile = await guard.media(account()), await guard.media(account())
    feed(dropped, stock_zip({"d": b"d" * 9000}))
    with pytest.raises(OverQuota, match="Your media would take"):
        feed(meanwhile, stock_zip({"e": b"e" * 1000}))
    dropped.done(applied=False)
    dropped.done(applied=True)  # twice: once
    assert MediaTotal(folder).current() == 150
    now[0] += 601
    await guard.media(account())
    assert MediaTotal(folder).current() == 1100


async def test_a_collection_over_its_limit_lets_deletions_through_and_says_why_once(tmp_path):
    # Not an SQLite file: the file and its WAL count whole (quota/livesize.py).
    (tmp_path / "collection.anki2").write_bytes(b"c" * 600_000)
    (tmp_path / "collection.anki2-wal").write_bytes(b"w" * 500_000)
    guard = QuotaGuard(Limits(collection=MB), lambda a: tmp_path)
    await guard.meta(account())  # nothing refused yet: the sync may begin
    check = await guard.collection(account(), "sync/applyChunk")
    check.chunk(30, 23)
    check.whole(protocol.compress(b'{"chunk":{"done":true}}'))  # a deletion's chunk
    with pytest.raises(OverQuota, match="1.1 MB, over its limit of 1.0 MB. Deletions still"):
        check.whole(protocol.compress(b'{"chunk":{"done":true,"notes":[[1]]}}'))
    with pytest.raises(OverQuota, match="1.1 MB, over its limit of 1.0 MB. Deletions still"):
        await guard.meta(account())  # the refusal, shown once
    await guard.meta(account())
    with pytest.raises(OverQuota):
        check.chunk(40_000, 33_000)  # larger than any body that adds nothing
    for unlimited in (account(collection_megs=2), account(collection_megs=0)):
        assert await guard.collection(unlimited, "sync/applyChunk") is None
        await guard.meta(unlimited)


@pytest.mark.parametrize(
    ("meta", "total"),
    [
        ([["new", "0"]] + [["held", None]] * 4, 600),  # deleted four times: its 500 go once
        ([["held", "0"], ["held", None]], 600),  # added then deleted: counts as kept
        ([["held", None], ["held", "0"]], 600),
    ],
)
def test_a_name_named_twice_frees_its_stored_size_once(tmp_path, meta, total):
    media = tmp_path / "media"
    media.mkdir()
    (media / "held").write_bytes(b"h" * 500)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        if any(entry for _, entry in meta):
            z.writestr("0", b"n" * 600)
        z.writestr("_meta", json.dumps(meta))
    check = MediaCheck(Limits(media=10_000), media, held(media.parent, 500))
    feed(check, out.getvalue())
    assert check.total == total


async def test_graves_while_over_spend_the_allowance_then_say_why_and_reset_once_under(
    tmp_path, monkeypatch
):
    from gateway.quota import allowance

    monkeypatch.setattr(allowance, "IDS", 3)
    (tmp_path / "collection.anki2").write_bytes(b"c" * 1_100_000)  # no SQLite header: its size
    guard = QuotaGuard(Limits(collection=MB), lambda a: tmp_path)
    start = await guard.collection(account(), "sync/start")
    start.whole(protocol.compress(b'{"minUsn":0,"lnewer":false,"graves":null}'))
    graves = await guard.collection(account(), "sync/applyGraves")
    graves.whole(protocol.compress(b'{"chunk":{"cards":[1],"notes":[2],"decks":[]}}'))
    with pytest.raises(OverQuota, match="sends more deletions than this server takes"):
        graves.whole(protocol.compress(b'{"chunk":{"cards":[3],"notes":[4],"decks":[]}}'))
    with pytest.raises(OverQuota, match="1.1 MB, over its limit of 1.0 MB. This sync sends more"):
        await guard.meta(account())
    await guard.meta(account())  # once
    with pytest.raises(OverQuota):
        graves.whole(protocol.compress(b'{"chunk":{"notes":["x"]}}'))  # unreadable
    with pytest.raises(OverQuota):
        graves.chunk(40_000, 33_000)  # larger than any chunk the client sends
    graves.whole(protocol.compress(b'{"chunk":{"notes":[5]}}'))  # the allowance's last id
    # Under the limit: sync/meta clears the allowance, no check while under.
    (tmp_path / "collection.anki2").write_bytes(b"c" * 900_000)
    await guard.meta(account())
    assert not (tmp_path / allowance.FILE_NAME).exists()
    assert await guard.collection(account(), "sync/applyGraves") is None


async def test_an_accounts_folder_is_resolved_once_and_its_sizes_read_every_time(tmp_path):
    # Resolving the folder (Registry.folder: two realpaths) was ~160 us on four requests of
    # every sync (issue 18); the sizes behind it must still be read fresh on each request.
    resolved: list[str] = []

    def folder_of(a: Account) -> Path:
        resolved.append(a.name)
        return tmp_path

    guard = QuotaGuard(Limits(collection=MB), folder_of)
    assert await guard.collection(account(), "sync/applyChunk") is None  # no collection yet
    (tmp_path / "collection.anki2").write_bytes(b"c" * 1_100_000)  # grown past the limit
    check = await guard.collection(account(), "sync/applyChunk")
    assert check is not None
    with pytest.raises(OverQuota):
        check.whole(protocol.compress(b'{"chunk":{"done":true,"notes":[[1]]}}'))
    with pytest.raises(OverQuota):
        await guard.meta(account())  # the refusal, shown once
    assert resolved == ["bob"]
