"""Matching an earlier server's folder name to a Cognito user (moto as Cognito)."""

from __future__ import annotations

import pytest

from gateway.identity.cognito import CognitoProvider
from gateway.identity.provider import Identity
from gateway.importer.match import Matched, Unmatched, decide, match

PASSWORD = "Correct-Horse-9"


async def matched(pool, tmp_path, name: str) -> Matched | Unmatched:
    provider = CognitoProvider(pool.config(tmp_path).cognito)
    try:
        return await match(provider, name)
    finally:
        await provider.close()


async def test_a_username_folder_matches_its_user(cognito, tmp_path):
    sub = cognito.add_user("alice", PASSWORD, "alice@example.com")
    found = await matched(cognito, tmp_path, "alice")
    assert isinstance(found, Matched) and (found.identity.sub, found.by) == (sub, "username")


async def test_an_email_folder_matches_only_a_verified_email(cognito, tmp_path):
    sub = cognito.add_user("u1", PASSWORD, "bob@example.com")
    cognito.add_user("u2", PASSWORD, "eve@example.com", email_verified=False)
    found = await matched(cognito, tmp_path, "bob@example.com")
    assert isinstance(found, Matched) and (found.identity.sub, found.by) == (sub, "email")
    refused = await matched(cognito, tmp_path, "eve@example.com")
    assert isinstance(refused, Unmatched) and "unverified" in refused.reason


async def test_a_local_part_folder_matches_one_verified_email_and_refuses_two(cognito, tmp_path):
    sub = cognito.add_user("u1", PASSWORD, "testuser@example.com")
    found = await matched(cognito, tmp_path, "testuser")
    assert isinstance(found, Matched) and found.identity.sub == sub
    cognito.add_user("u3", PASSWORD, "testuser@example.net")
    twice = await matched(cognito, tmp_path, "testuser")
    assert isinstance(twice, Unmatched) and "ambiguous" in twice.reason


async def test_a_look_alike_with_a_verified_email_cannot_claim_a_local_part_folder(
    cognito, tmp_path
):
    # The folder's owner signed up through ankisyncd, which verified nothing: their email is
    # unverified. An attacker registers victim@evil.example and verifies that address.
    # Folder "v.old": ankisyncd's provisioning named folders by the email's local part.
    cognito.add_user("owner", PASSWORD, "v.old@example.com", email_verified=False)
    cognito.add_user("mallory2", PASSWORD, "v.old@evil.example")
    claimed = await matched(cognito, tmp_path, "v.old")
    assert isinstance(claimed, Unmatched) and "ambiguous" in claimed.reason


async def test_an_email_pool_matches_sub_folders_and_verified_emails(cognito_email, tmp_path):
    sub = cognito_email.add_user("dana@example.com", PASSWORD, "dana@example.com")
    by_sub = await matched(cognito_email, tmp_path, sub)
    assert isinstance(by_sub, Matched) and by_sub.identity.sub == sub
    by_email = await matched(cognito_email, tmp_path, "dana@example.com")
    assert isinstance(by_email, Matched) and by_email.identity.sub == sub
    # Found through the email alias, but the email is not verified: not enough.
    cognito_email.add_user("fay@example.com", PASSWORD, "fay@example.com", email_verified=False)
    refused = await matched(cognito_email, tmp_path, "fay@example.com")
    assert isinstance(refused, Unmatched) and "unverified" in refused.reason


async def test_nobody_matches_an_unknown_name(cognito, tmp_path):
    found = await matched(cognito, tmp_path, "nobody")
    assert isinstance(found, Unmatched) and "no Cognito user" in found.reason


def user(email: str | None) -> Identity:
    return Identity(sub=f"s-{email}", username="u", email=email)


@pytest.mark.parametrize(
    ("name", "listed", "expected"),
    [
        ("ann", [user("ann@a.com")], "s-ann@a.com"),
        ("ann", [user("Ann@A.com")], "s-Ann@A.com"),  # case folded
        ("ann", [user("annie@a.com")], "no Cognito user"),  # Cognito's filter is not trusted
        ("ann", [user(None)], "unverified"),
        # The unverified one may be the folder's owner (ankisyncd verified nothing): refused.
        ("ann", [user("ann@a.com"), user(None)], "ambiguous"),
        ("ann", [user("ann@a.com"), user("annie@b.com")], "s-ann@a.com"),  # not listed really
        ("ann@a.com", [user("ann@a.com"), user(None)], "s-ann@a.com"),  # owns this very address
        ("ann", [user("ann@a.com"), user("ann@b.com")], "ambiguous"),
        ("ann@a.com", [user("ann@a.com.evil")], "no Cognito user"),
        ("ann@a.com", [], "no Cognito user"),
    ],
)
def test_decide(name, listed, expected):
    found = decide(name, listed)
    if isinstance(found, Matched):
        assert found.identity.sub == expected
    else:
        assert expected in found.reason


async def test_a_username_that_is_another_users_local_part_is_ambiguous(cognito, tmp_path):
    # ankisyncd named folders by username, and its provisioning by the email's local part:
    # folder "tess" may be tess@example.com's. Anyone can register the username "tess".
    cognito.add_user("u1", PASSWORD, "tess@example.com", email_verified=False)
    cognito.add_user("tess", PASSWORD, "mallory@evil.example")
    found = await matched(cognito, tmp_path, "tess")
    assert isinstance(found, Unmatched) and "ambiguous" in found.reason
    # The username's own email does not make it ambiguous.
    sub = cognito.add_user("ursula", PASSWORD, "ursula@example.com")
    mine = await matched(cognito, tmp_path, "ursula")
    assert isinstance(mine, Matched) and (mine.identity.sub, mine.by) == (sub, "username")
