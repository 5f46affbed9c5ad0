"""The local-mode code book: only the code issued last, for its purpose, once, in time."""

from __future__ import annotations

import pytest

from gateway.portal.codes import MAX_WRONG, CodeBook, random_code
from gateway.portal.directory import ExpiredCode, WrongCode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(clock: Clock, *codes: str) -> CodeBook:
    queue = list(codes)
    return CodeBook(ttl=60, clock=clock, generate=lambda: queue.pop(0))


@pytest.mark.parametrize("typed", ["000000", "123456", "", "12345", "1234567", "٠١٢٣٤٥"])
def test_a_made_up_code_is_refused(typed: str) -> None:
    codes = book(Clock(), "482913")
    codes.issue("reset", "a@example.com")
    with pytest.raises(WrongCode):
        codes.check("reset", "a@example.com", typed)


def test_the_issued_code_works_once_for_its_purpose_and_email() -> None:
    codes = book(Clock(), "482913")
    assert codes.issue("confirm", "A@Example.com") == "482913"
    with pytest.raises(WrongCode):
        codes.check("reset", "a@example.com", "482913")  # a sign-up code resets nothing
    with pytest.raises(WrongCode):
        codes.check("confirm", "b@example.com", "482913")
    codes.check("confirm", "a@example.com", " 482913 ")
    with pytest.raises(WrongCode):
        codes.check("confirm", "a@example.com", "482913")


def test_a_new_code_replaces_the_old_one() -> None:
    codes = book(Clock(), "111111", "222222")
    codes.issue("confirm", "a@example.com")
    codes.issue("confirm", "a@example.com")
    with pytest.raises(WrongCode):
        codes.check("confirm", "a@example.com", "111111")
    codes.check("confirm", "a@example.com", "222222")


def test_a_code_expires() -> None:
    clock = Clock()
    codes = book(clock, "482913")
    codes.issue("reset", "a@example.com")
    clock.now += 60
    with pytest.raises(ExpiredCode):
        codes.check("reset", "a@example.com", "482913")


def test_too_many_wrong_tries_void_the_code() -> None:
    codes = book(Clock(), "482913")
    codes.issue("reset", "a@example.com")
    for _ in range(MAX_WRONG):
        with pytest.raises(WrongCode):
            codes.check("reset", "a@example.com", "000000")
    with pytest.raises(WrongCode):
        codes.check("reset", "a@example.com", "482913")


def test_random_codes_are_six_digits_and_vary() -> None:
    drawn = {random_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in drawn)
    assert len(drawn) > 190
