"""The limits and their messages, as tables of cases (quota/limits.py)."""

from __future__ import annotations

import pytest

from gateway.config import QuotaConfig
from gateway.quota.limits import (
    MB,
    Limits,
    OverQuota,
    Override,
    check_collection,
    check_media_file,
    check_media_total,
    check_upload,
    quota_limits,
)


def test_defaults_are_ankiwebs_figures_and_zero_is_unlimited():
    assert quota_limits(QuotaConfig()) == Limits(100 * MB, 250 * MB, 1000 * MB, 100 * MB)
    assert Limits.from_megs(0, 0, 0, 0) == Limits(None, None, None, None)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (Override(), Limits(100 * MB, 250 * MB, 1000 * MB, 100 * MB)),
        (Override(media_megs=5), Limits(100 * MB, 250 * MB, 5 * MB, 100 * MB)),
        (Override(media_megs=0, collection_megs=0), Limits(100 * MB, None, None, 100 * MB)),
        (Override(1, 2, 3, 4), Limits(1 * MB, 2 * MB, 3 * MB, 4 * MB)),
    ],
)
def test_an_override_replaces_the_defaults_field_by_field(override, expected):
    assert quota_limits(QuotaConfig()).with_override(override) == expected


@pytest.mark.parametrize("bad", [-1, 1.5, "5"])
def test_an_override_is_whole_megabytes(bad):
    with pytest.raises(ValueError):
        Override(media_megs=bad)


LIMITS = Limits.from_megs(1, 2, 3, 1)


@pytest.mark.parametrize(
    ("check", "args", "message"),
    [
        (check_upload, (MB, 2 * MB), None),
        (check_upload, (MB + 1, 0), "larger than this server's limit of 1.0 MB (compressed)"),
        (check_upload, (MB, 2 * MB + 1), "larger than this server's limit of 2.0 MB. Make"),
        (check_collection, (2 * MB,), None),
        (check_collection, (2_500_000,), "on this server is 2.5 MB, over its limit of 2.0 MB."),
        (check_media_total, (3 * MB,), None),
        (check_media_total, (3 * MB + 1,), "would take 3.0 MB, over this server's limit of 3.0"),
    ],
)
def test_each_limit_is_inclusive_and_its_message_names_the_figures(check, args, message):
    if message is None:
        check(LIMITS, *args)
        return
    with pytest.raises(OverQuota) as info:
        check(LIMITS, *args)
    assert message in str(info.value)


def test_a_media_file_over_its_limit_is_named():
    check_media_file(LIMITS, "a.jpg", MB)
    with pytest.raises(OverQuota, match=r"The media file 'b\.jpg' is 1\.5 MB, over .* 1\.0 MB"):
        check_media_file(LIMITS, "b.jpg", 1_500_000)


def test_unlimited_never_refuses():
    free = Limits()
    check_upload(free, 10**12, 10**12)
    check_collection(free, 10**12)
    check_media_file(free, "x", 10**12)
    check_media_total(free, 10**12)
