import hashlib
import hmac

import pytest

from gateway.workers.credentials import password_deriver

SECRET = b"s" * 64


def test_generation_zero_derives_the_passwords_of_releases_without_generations():
    # The formula of the first release, written out: upgrading must log nobody out.
    before = hmac.new(SECRET, b"worker-password\0alice", hashlib.sha256).hexdigest()
    assert password_deriver(SECRET)("alice", 0) == before
    assert password_deriver(SECRET)("alice") == before


def test_each_generation_derives_another_password_the_same_after_a_restart():
    first, again = password_deriver(SECRET), password_deriver(SECRET)
    passwords = {first("alice", g) for g in range(5)}
    assert len(passwords) == 5
    assert first("alice", 3) == again("alice", 3)
    assert first("alice", 1) != first("bob", 1)
    assert len(first("alice", 7)) == 64


def test_a_negative_generation_is_refused():
    with pytest.raises(ValueError):
        password_deriver(SECRET)("alice", -1)
