"""The media total against hostile uploads, end to end: the real `anki` client and raw clients
→ the gateway → a real stock sync server, moto as Cognito: a `_meta` naming one file more than
once (the stock server applies it), uploads at once, uploads through two gateway processes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile

import zstandard

from tests import rawhttp
from tests.quota.test_quota_e2e import MB, PASSWORD, device, server_files, started
from tests.test_uploads import send

MEDIA = "msync/uploadChanges"


def test_a_file_deleted_many_times_in_one_upload_frees_its_room_once(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, media_megs=2, media_file_megs=1)
    bob = device(tmp_path, "bob", gw)
    held = bob.add_media("held.bin", os.urandom(MB))
    bob.sync()
    bob.close()
    assert server_files(gw) == {held: MB}

    # 1 MB held; three new files of 0.9 MB and held.bin deleted (named four times): the
    # media would take 2.7 MB > 2 MB. Counted four times, the deletion made it look like
    # -0.3 MB: an upload that "frees room" passes, and each next one the same way.
    new = {f"new{i}.bin": os.urandom(900_000) for i in range(3)}
    meta = [[name, str(i)] for i, name in enumerate(new)] + [[held, None]] * 4
    zipped = zip_of(new, meta)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    body = zstandard.ZstdCompressor().compress(zipped)
    status, answer = gw.call(send(gw.url, key, body, "msync/uploadChanges"))
    assert status == 200
    assert json.loads(answer)["err"] == (
        "Your media would take 2.7 MB, over this server's limit of 2.0 MB. Delete unused media "
        "(Tools > Check Media) and sync again."
    )
    assert server_files(gw) == {held: MB}


def upload(tag: str, files: int = 2, size: int = 750_000) -> bytes:
    """A zstd body of `files` new media files of `size` bytes, named after `tag`."""
    new = {f"{tag}{i}.bin": os.urandom(size) for i in range(files)}
    meta = [[name, str(i)] for i, name in enumerate(new)]
    return zstandard.ZstdCompressor().compress(zip_of(new, meta))


def zip_of(files: dict[str, bytes], meta: list) -> bytes:
    """Stored entries "0", "1", ... and `_meta` as given (rslib's layout)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for i, data in enumerate(files.values()):
            z.writestr(str(i), data)
        z.writestr("_meta", json.dumps(meta))
    return out.getvalue()


def test_two_media_uploads_at_once_cannot_both_take_the_room_that_is_left(
    cognito, tmp_path, start_gateway
):
    # Two devices (or one client sending twice at once): 2 MB free, each upload adds 1.5 MB.
    # Each was checked against the total before either was applied, and each then set the
    # total to its own: 3 MB stored, and the total kept counting 1.5 MB until the next walk.
    gw = started(cognito, tmp_path, start_gateway, media_megs=2, media_file_megs=1)
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))

    async def both():
        return await asyncio.gather(*(send(gw.url, key, upload(tag), MEDIA) for tag in "ab"))

    answers = gw.call(both())
    errors = sorted(json.loads(answer)["err"] for _, answer in answers)
    assert errors == [
        "",
        "Your media would take 3.0 MB, over this server's limit of 2.0 MB. Delete unused media "
        "(Tools > Check Media) and sync again.",
    ]
    assert sum(server_files(gw).values()) == 1_500_000


def test_an_upload_through_another_gateway_process_counts_against_the_same_limit(
    cognito, tmp_path, start_gateway
):
    gw = started(cognito, tmp_path, start_gateway, media_megs=2, media_file_megs=1)
    other = start_gateway(gw.config)  # a second process on the same data folder
    # Each process kept its own total (walked at most every 10 minutes): an upload through the
    # other was not seen meanwhile, so with N processes an account stored about N times its limit.
    key = gw.call(rawhttp.login(gw.port, "bob", PASSWORD))
    # Each process has looked at the account's media once (nothing there yet).
    for tag, each in (("first", gw), ("second", other)):
        status, answer = each.call(send(each.url, key, upload(tag, 1, 10), MEDIA))
        assert (status, json.loads(answer)["err"]) == (200, "")
    status, answer = gw.call(send(gw.url, key, upload("a"), MEDIA))
    assert (status, json.loads(answer)["err"]) == (200, "")
    status, answer = other.call(send(other.url, key, upload("b"), MEDIA))
    assert json.loads(answer)["err"].startswith("Your media would take 3.0 MB")
    assert sum(server_files(gw).values()) == 1_500_020
