"""gateway/provision/request.py: the body's shape, table by table."""

from __future__ import annotations

import json

import pytest

from gateway.provision.request import InvalidRequest, ProvisionRequest, decode, parse

SUB = "3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {
                "username": "testuser",
                "email": "testuser@example.com",
                "cognito_user_id": SUB,
                "user_attributes": {"sub": SUB, "email": "testuser@example.com"},
            },
            ProvisionRequest("testuser", "testuser@example.com", SUB),
            id="lambda-shape",
        ),
        pytest.param(
            {"username": "u@example.com", "email": "u@example.com"},
            ProvisionRequest("u@example.com", "u@example.com", None),
            id="manual-username-and-email",
        ),
        pytest.param({"username": "bob"}, ProvisionRequest("bob", None, None), id="username-only"),
        pytest.param(
            {"email": "bob@example.com"},
            ProvisionRequest(None, "bob@example.com", None),
            id="email-only",
        ),
        pytest.param(
            {"username": "bob", "cognito_user_id": SUB},
            ProvisionRequest("bob", None, SUB),
            id="sub-from-cognito-user-id",
        ),
        pytest.param(
            {"username": "bob", "cognito_user_id": "test-user-id"},
            ProvisionRequest("bob", None, None),
            id="non-uuid-user-id-ignored",
        ),
        pytest.param(
            {"username": "bob", "cognito_user_id": SUB, "user_attributes": {"sub": SUB.upper()}},
            ProvisionRequest("bob", None, SUB),
            id="sub-lowercased",
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"email": "b@example.com"}},
            ProvisionRequest("bob", "b@example.com", None),
            id="email-from-attributes",
        ),
        pytest.param(
            {"username": "bob", "email": "", "user_attributes": {"phone_number": "+100"}},
            ProvisionRequest("bob", None, None),
            id="empty-email-means-none",
        ),
        pytest.param(
            {"username": "bob", "email": None, "cognito_user_id": None, "user_attributes": None},
            ProvisionRequest("bob", None, None),
            id="nulls-mean-absent",
        ),
        pytest.param(
            {"username": "bob", "extra": [1, 2], "user_attributes": {"custom:x": 5}},
            ProvisionRequest("bob", None, None),
            id="unknown-fields-ignored",
        ),
        pytest.param(
            {"username": "Zoë_Ünïcødé", "email": "zoë@exämple.com"},
            ProvisionRequest("Zoë_Ünïcødé", "zoë@exämple.com", None),
            id="unicode",
        ),
        pytest.param(
            {"username": "u" * 128}, ProvisionRequest("u" * 128, None, None), id="username-at-limit"
        ),
        pytest.param(
            {"username": "a.b-c+d@e!"}, ProvisionRequest("a.b-c+d@e!", None, None), id="punctuation"
        ),
    ],
)
def test_valid_bodies_parse(body: object, expected: ProvisionRequest) -> None:
    assert parse(body) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param([], "JSON object", id="array"),
        pytest.param([{"username": "bob"}], "JSON object", id="array-of-object"),
        pytest.param("bob", "JSON object", id="string"),
        pytest.param(42, "JSON object", id="number"),
        pytest.param(None, "JSON object", id="null"),
        pytest.param({}, "one of them is required", id="empty-object"),
        pytest.param({"cognito_user_id": SUB}, "one of them is required", id="sub-only"),
        pytest.param({"username": 7}, "username: must be a string", id="username-number"),
        pytest.param({"username": ["a"]}, "username: must be a string", id="username-list"),
        pytest.param({"username": True}, "username: must be a string", id="username-bool"),
        pytest.param({"username": ""}, "must not be empty", id="username-empty"),
        pytest.param({"username": "u" * 129}, "longer than 128", id="username-too-long"),
        pytest.param({"username": "a b"}, "whitespace", id="username-space"),
        pytest.param({"username": "a\nb"}, "whitespace", id="username-newline"),
        pytest.param({"username": "a\x00b"}, "control", id="username-nul"),
        pytest.param({"username": "a\u200bb"}, "control", id="username-zero-width"),
        pytest.param({"username": "a\ud800"}, "control", id="username-lone-surrogate"),
        pytest.param({"username": "../../etc/passwd"}, "path syntax", id="traversal"),
        pytest.param({"username": ".."}, "path syntax", id="dotdot"),
        pytest.param({"username": "a/b"}, "path syntax", id="slash"),
        pytest.param({"username": "a\\b"}, "path syntax", id="backslash"),
        pytest.param({"username": "bob", "email": 5}, "email: must be a string", id="email-number"),
        pytest.param({"username": "bob", "email": "nobody"}, "local@domain", id="email-no-at"),
        pytest.param({"username": "bob", "email": "a@b@c"}, "local@domain", id="email-two-ats"),
        pytest.param({"username": "bob", "email": "a @b.c"}, "local@domain", id="email-space"),
        pytest.param({"username": "bob", "email": "a@b.c\n"}, "local@domain", id="email-newline"),
        pytest.param(
            {"username": "bob", "email": "x" * 250 + "@b.co"}, "longer than 254", id="email-long"
        ),
        pytest.param({"email": "../x@example.com"}, "path syntax", id="email-traversal"),
        pytest.param(
            {"username": "bob", "user_attributes": []}, "user_attributes", id="attributes-list"
        ),
        pytest.param(
            {"username": "bob", "user_attributes": "sub"}, "user_attributes", id="attributes-str"
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"sub": 1}},
            "sub: must be a string",
            id="sub-int",
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"sub": "not-a-uuid"}}, "UUID", id="sub-not-uuid"
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"sub": SUB + "\n"}}, "UUID", id="sub-newline"
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"sub": "../" + SUB}}, "UUID", id="sub-traversal"
        ),
        pytest.param(
            {"username": "bob", "user_attributes": {"email": ["x"]}},
            "user_attributes.email",
            id="attribute-email-list",
        ),
        pytest.param(
            {"username": "bob", "cognito_user_id": 12}, "cognito_user_id", id="user-id-number"
        ),
    ],
)
def test_invalid_bodies_are_refused_with_the_reason(body: object, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem.replace("(", r"\(")):
        parse(body)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"username=bob", id="form-encoded"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[" * 100_000, id="deep-nesting"),
        pytest.param(b"1" * 5000, id="integer-too-long-to-convert"),
        pytest.param(b'{"username": "bob"} trailing', id="trailing-garbage"),
    ],
)
def test_undecodable_bodies_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        decode(raw)


def test_decode_reads_utf8_json() -> None:
    assert decode(json.dumps({"username": "Zoë"}, ensure_ascii=False).encode()) == {
        "username": "Zoë"
    }


def test_problem_texts_never_echo_the_input() -> None:
    secretish = "hunter2-SECRET-value"
    for body in ({"username": secretish + " "}, {"username": "b", "email": secretish}):
        with pytest.raises(InvalidRequest) as caught:
            parse(body)
        assert secretish not in str(caught.value)
