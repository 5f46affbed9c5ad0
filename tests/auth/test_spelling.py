import pytest

from gateway.identity.spelling import canonical


@pytest.mark.parametrize(
    "typed",
    [
        "victim@example.com",
        "Victim@example.com",
        "VICTIM@EXAMPLE.COM",
        "  victim@example.com\t",
        "ｖｉｃｔｉｍ@ｅｘａｍｐｌｅ.ｃｏｍ",  # full-width forms (NFKC)
    ],
)
def test_every_spelling_of_one_user_has_one_key(typed):
    assert canonical(typed) == "victim@example.com"


@pytest.mark.parametrize(
    "typed, key",
    [("Straße", "strasse"), ("ǅ", "dž"), ("Ⅻ", "xii"), ("", ""), ("a b", "a b")],
)
def test_casefold_and_compatibility_forms(typed, key):
    assert canonical(typed) == key


def test_different_users_keep_different_keys():
    assert canonical("alice@example.com") != canonical("alice@example.org")
