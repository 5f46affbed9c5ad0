"""FakeProvider: its own knobs, and the same answers as CognitoProvider on moto."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.identity.cognito import CognitoProvider
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import (
    BadCredentials,
    ChallengeRequired,
    Identity,
    ProviderUnavailable,
    UnknownUser,
)

if TYPE_CHECKING:
    from conftest import CognitoPool

PASSWORD = "Correct-Horse-9!"


@dataclass
class Subject:
    """A provider under test plus the way to put users behind it."""

    provider: Any
    add_user: Any
    disable: Any


@pytest.fixture(params=["fake", "cognito-on-moto"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "fake":
        fake = FakeProvider()
        yield Subject(fake, fake.add_user, fake.disable)
        return
    pool: CognitoPool = request.getfixturevalue("cognito")
    provider = CognitoProvider(pool.config(tmp_path).cognito)
    yield Subject(provider, pool.add_user, pool.disable)
    await provider.close()


async def test_both_providers_return_sub_username_and_email(subject: Subject) -> None:
    sub = subject.add_user("alice", PASSWORD, email="alice@example.com")

    identity = await subject.provider.authenticate("alice", PASSWORD)

    assert identity == Identity(sub=sub, username="alice", email="alice@example.com")
    assert await subject.provider.lookup("alice") == identity


@pytest.mark.parametrize(
    "username, password",
    [("alice", "Wrong-Password-1!"), ("mallory", PASSWORD), ("alice", "")],
)
async def test_both_providers_refuse_wrong_credentials(
    subject: Subject, username: str, password: str
) -> None:
    subject.add_user("alice", PASSWORD)
    with pytest.raises(BadCredentials):
        await subject.provider.authenticate(username, password)


async def test_both_providers_refuse_a_disabled_user(subject: Subject) -> None:
    subject.add_user("alice", PASSWORD)
    subject.disable("alice")
    with pytest.raises(BadCredentials):
        await subject.provider.authenticate("alice", PASSWORD)


async def test_both_providers_report_an_unknown_user_on_lookup(subject: Subject) -> None:
    with pytest.raises(UnknownUser):
        await subject.provider.lookup("nobody")


async def test_fake_logs_in_by_email_alias_case_insensitively() -> None:
    fake = FakeProvider()
    sub = fake.add_user("alice", PASSWORD, email="Alice@Example.com")

    by_email = await fake.authenticate("alice@example.com", PASSWORD)
    by_name = await fake.authenticate("ALICE", PASSWORD)

    assert by_email == by_name == Identity(sub, "alice", "Alice@Example.com")
    assert (await fake.lookup("alice@example.com")).sub == sub


async def test_fake_passwords_are_case_sensitive_and_may_be_unicode() -> None:
    fake = FakeProvider()
    fake.add_user("alice", "pässwörd")

    assert (await fake.authenticate("alice", "pässwörd")).username == "alice"
    with pytest.raises(BadCredentials):
        await fake.authenticate("alice", "PÄSSWÖRD")


async def test_fake_counts_every_call_including_failures() -> None:
    fake = FakeProvider()
    fake.add_user("alice", PASSWORD)

    await fake.authenticate("alice", PASSWORD)
    with pytest.raises(BadCredentials):
        await fake.authenticate("alice", "nope")
    with pytest.raises(UnknownUser):
        await fake.lookup("bob")

    assert fake.calls == 3


@pytest.mark.parametrize(
    "error", [ProviderUnavailable("down", retry_after=5), ChallengeRequired("SMS_MFA")]
)
async def test_fake_fail_with_raises_on_every_call_until_cleared(error: Exception) -> None:
    fake = FakeProvider(fail_with=error)
    fake.add_user("alice", PASSWORD)

    for _ in range(3):
        with pytest.raises(type(error)) as info:
            await fake.authenticate("alice", PASSWORD)
        assert info.value is error
        # Re-raising one instance must not pile up tracebacks across calls.
        assert len(traceback.extract_tb(info.value.__traceback__)) < 5
    with pytest.raises(type(error)):
        await fake.lookup("alice")
    fake.fail_with = None

    assert (await fake.authenticate("alice", PASSWORD)).username == "alice"
    assert fake.calls == 5


async def test_fake_delay_applies_per_call_without_blocking_the_loop() -> None:
    fake = FakeProvider(delay=0.1)
    fake.add_user("alice", PASSWORD)

    started = time.monotonic()
    await asyncio.gather(*(fake.authenticate("alice", PASSWORD) for _ in range(10)))
    elapsed = time.monotonic() - started

    assert 0.1 <= elapsed < 0.5  # ten overlapping 0.1 s calls, not one after another
    assert fake.calls == 10


def test_fake_refuses_duplicate_usernames_and_emails() -> None:
    fake = FakeProvider()
    fake.add_user("alice", PASSWORD, email="alice@example.com")

    with pytest.raises(ValueError):
        fake.add_user("ALICE", PASSWORD)
    with pytest.raises(ValueError):
        fake.add_user("bob", PASSWORD, email="ALICE@example.com")
    with pytest.raises(ValueError):
        fake.add_user("alice@example.com", PASSWORD)
    assert len({fake.add_user("bob", PASSWORD), fake.add_user("carol", PASSWORD)}) == 2


def test_fake_disable_of_an_unknown_user_is_an_error() -> None:
    with pytest.raises(KeyError):
        FakeProvider().disable("nobody")


async def test_fake_close_marks_it_closed() -> None:
    fake = FakeProvider()
    await fake.close()
    assert fake.closed
