import pytest

from gateway import naming


@pytest.mark.parametrize(
    ("username", "email", "expected"),
    [
        ("testuser", "testuser@example.com", "testuser"),
        ("3f1c2b9e-8a8b-4c1d-9e0f-1234567890ab", "Jane.Doe@Example.com", "jane.doe"),
        ("3f1c2b9e-8a8b-4c1d-9e0f-1234567890ab", None, "user"),
        ("../x", None, "x"),
        ("a/b", None, "a-b"),
        ("..", None, "user"),
        (".hidden", None, "hidden"),
        ("José Müller", None, "jose-muller"),
        ("日本語", None, "user"),
        ("nul\x00byte", None, "nul-byte"),
        ("a" * 300, None, "a" * naming.MAX_LENGTH),
        ("bob", "bob+anki@example.com", "bob-anki"),
        ("x..y", None, "x.y"),
        ("--__..", None, "user"),
    ],
)
def test_base_name_is_safe_and_readable(username, email, expected):
    name = naming.base_name(username, email)
    assert name == expected
    assert naming.is_safe(name)


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", ".x", "x.", "A", "a\x00", "a..b", "é"])
def test_unsafe_names_are_recognised(name):
    assert not naming.is_safe(name)


def test_candidates_add_numeric_suffixes():
    gen = naming.candidates("bob")
    assert [next(gen) for _ in range(3)] == ["bob", "bob-2", "bob-3"]
