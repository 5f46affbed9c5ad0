"""POST /provision-user over real HTTP: keys, statuses, identity resolution, idempotency, races.

The app holds only this route (tests/provision/minimal_app.py), served on a loopback port, with
moto standing in for Cognito (CognitoProvider) or the FakeProvider for outages.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.config import Config, Secret
from gateway.identity.cognito import CognitoProvider
from gateway.identity.fake import FakeProvider
from gateway.identity.provider import Identity, ProviderMisconfigured, ProviderUnavailable
from gateway.provision.signature import signed_headers
from gateway.registry import SqliteRegistry
from tests.blocking import BlockingRegistry
from tests.provision.minimal_app import KEY, NEW_KEY, ProvisionServer, lambda_body, post

#: A well-formed sub no Cognito user has: for requests refused before (or by) the lookup.
UNKNOWN_SUB = "3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"
PASSWORD = "Passw0rd!x"
SIGNING = "signing-secret-" + "x" * 20

Serve = Callable[..., ProvisionServer]


@pytest.fixture
def serve(tmp_path: Path, cognito: Any) -> Iterator[Serve]:
    """`serve(provider=None, pool=None, **sections)`: start the route.

    The default provider is moto's Cognito, the `cognito` pool unless `pool` names another.
    """
    started: list[ProvisionServer] = []

    def start(
        provider: Any = None, pool: Any = None, **sections: dict[str, Any]
    ) -> ProvisionServer:
        sections.setdefault("provision", {"api_keys": (Secret(KEY),)})
        config: Config = (pool or cognito).config(tmp_path / f"data{len(started)}", **sections)
        server = ProvisionServer(config, provider or CognitoProvider(config.cognito)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- the happy path ---------------------------------------------------------------------------


def test_lambda_body_creates_the_account_and_its_folder(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("testuser@example.com", PASSWORD, "testuser@example.com")
    server = serve()
    answer = post(server.url, lambda_body("testuser@example.com", sub, "testuser@example.com"))
    assert answer.status == 200
    assert answer.body == {
        "success": True,
        "message": "User testuser@example.com provisioned successfully",
        "username": "testuser",
        "user_directory": "collections/testuser",
        "created": True,
    }
    assert answer.headers["Content-Type"].startswith("application/json")
    account = server.registry.get(sub)
    assert account is not None and account.name == "testuser"
    assert account.cognito_username == "testuser@example.com"
    assert account.email == "testuser@example.com"
    assert (server.config.data_dir / "collections" / "testuser").is_dir()


def test_second_call_answers_created_false_and_changes_nothing(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD, "bob@example.com")
    server = serve()
    body = lambda_body("bob", sub, "bob@example.com")
    first, second = post(server.url, body), post(server.url, body)
    assert first.body["created"] is True
    assert second.status == 200 and second.body["created"] is False
    assert second.body["username"] == first.body["username"] == "bob"
    assert server.registry.count() == 1 and server.folders() == ["bob"]
    account = server.registry.get(sub)
    assert account is not None
    assert (account.name, account.cognito_username, account.email) == (
        "bob",
        "bob",
        "bob@example.com",
    )


def test_naming_matches_a_first_login_including_collisions(serve: Serve, cognito: Any) -> None:
    carol = cognito.add_user("carol", PASSWORD, "carol@example.com")
    carol2 = cognito.add_user("carol2", PASSWORD, "carol@example.org")
    server = serve()
    # A first login by carol would call exactly this, with Cognito's identity.
    login_account, _ = server.registry.ensure(Identity(carol, "carol", "carol@example.com"))
    answer = post(server.url, lambda_body("carol2", carol2, "carol@example.org"))
    assert login_account.name == "carol"
    assert answer.status == 200 and answer.body["username"] == "carol-2"
    assert server.folders() == ["carol", "carol-2"]


def test_email_pool_users_get_readable_names_not_their_uuid_username(
    serve: Serve, cognito_email: Any
) -> None:
    # Cognito gives every user of an email pool a UUID username (moto: the sub itself).
    sub = cognito_email.add_user("dave@example.com", PASSWORD, "dave@example.com")
    server = serve(pool=cognito_email)
    answer = post(server.url, lambda_body(sub, sub, "dave@example.com"))
    assert answer.status == 200 and answer.body["username"] == "dave"
    account = server.registry.get(sub)
    assert account is not None and account.cognito_username == sub


def test_unknown_fields_are_ignored(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("erin", PASSWORD)
    server = serve()
    body = lambda_body("erin", sub, None) | {"trigger": "x", "version": 2}
    answer = post(server.url, body)
    assert answer.status == 200 and answer.body["username"] == "erin"


# -- identity resolution ----------------------------------------------------------------------


def test_manual_call_with_username_and_email_uses_the_sub_from_cognito(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("frank", PASSWORD, "frank@example.com")
    server = serve()
    answer = post(server.url, {"username": "frank", "email": "frank@example.com"})
    assert answer.status == 200 and answer.body["created"] is True
    account = server.registry.get(sub)
    assert account is not None and account.name == "frank"


def test_old_made_up_cognito_user_id_falls_back_to_a_lookup(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("gina", PASSWORD, "gina@example.com")
    server = serve()
    body = {"username": "gina", "email": "gina@example.com", "cognito_user_id": "test-user-id"}
    assert post(server.url, body).status == 200
    assert server.registry.get(sub) is not None


def test_manual_call_with_email_only_in_an_email_pool(serve: Serve, cognito_email: Any) -> None:
    sub = cognito_email.add_user("hana@example.com", PASSWORD, "hana@example.com")
    server = serve(pool=cognito_email)
    answer = post(server.url, {"email": "hana@example.com"})
    assert answer.status == 200, answer.body
    assert answer.body["username"] == "hana"
    assert server.registry.get(sub) is not None


def test_unknown_user_is_404_with_a_clear_message_and_nothing_created(serve: Serve) -> None:
    server = serve()
    answer = post(server.url, {"username": "nobody", "email": "nobody@example.com"})
    assert answer.status == 404
    assert answer.body == {"success": False, "error": "user not found in the identity provider"}
    server.assert_untouched()


def test_a_made_up_sub_is_404_and_does_not_reserve_the_victims_name(
    serve: Serve, cognito: Any
) -> None:
    server = serve()
    forged = {
        "username": "mallory",
        "email": "victim@example.com",
        "cognito_user_id": UNKNOWN_SUB,
        "user_attributes": {
            "sub": UNKNOWN_SUB,
            "email": "victim@example.com",
            "email_verified": "true",
        },
    }
    answer = post(server.url, forged)
    assert answer.status == 404
    assert answer.body == {"success": False, "error": "user not found in the identity provider"}
    assert server.registry.get(UNKNOWN_SUB) is None
    server.assert_untouched()

    victim = cognito.add_user("vsmith", PASSWORD, "victim@example.com")
    answer = post(server.url, lambda_body("vsmith", victim, "victim@example.com"))
    assert answer.status == 200 and answer.body["username"] == "victim"
    assert server.registry.count() == 1 and server.folders() == ["victim"]
    # And a first login (Cognito's identity, on the loop thread) finds that same account.
    account, created = server.registry.ensure(Identity(victim, "vsmith", "victim@example.com"))
    assert (account.name, created) == ("victim", False)


def test_a_real_sub_with_another_users_username_is_400_and_nothing_created(
    serve: Serve, cognito: Any
) -> None:
    ivan = cognito.add_user("ivan", PASSWORD, "ivan@example.com")
    cognito.add_user("judy", PASSWORD, "judy@example.com")
    server = serve()
    for username in ("judy", "judy@example.com"):
        body = {"username": username, "user_attributes": {"sub": ivan}}
        answer = post(server.url, body)
        assert answer.status == 400
        assert answer.body == {
            "success": False,
            "error": "username does not match the user with this sub",
        }
    server.assert_untouched()


def test_a_real_sub_with_an_unknown_username_leaves_the_provisioned_account_as_it_was(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("kate", PASSWORD, "kate@example.com")
    server = serve()
    assert post(server.url, lambda_body("kate", sub, "kate@example.com")).status == 200
    answer = post(server.url, {"username": "nobody-at-all", "user_attributes": {"sub": sub}})
    assert answer.status == 400
    assert answer.error == "username does not match the user with this sub"
    assert server.registry.count() == 1 and server.folders() == ["kate"]
    account = server.registry.get(sub)
    assert account is not None
    assert (account.name, account.cognito_username, account.email) == (
        "kate",
        "kate",
        "kate@example.com",
    )


def test_a_real_sub_with_the_users_verified_email_as_username_is_accepted(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("liam", PASSWORD, "liam@example.com")
    server = serve()
    answer = post(server.url, {"username": "LIAM@example.com", "user_attributes": {"sub": sub}})
    assert answer.status == 200 and answer.body["username"] == "liam"
    account = server.registry.get(sub)
    assert account is not None and account.cognito_username == "liam"


def _add_unverified(cognito: Any, username: str, email: str) -> str:
    """A confirmed moto user whose email Cognito has not verified; returns its sub."""
    return cognito.add_user(username, PASSWORD, email, email_verified=False)


def test_an_unverified_email_never_names_the_account(serve: Serve, cognito: Any) -> None:
    sub = _add_unverified(cognito, "uma", "boss@example.com")
    server = serve()
    # The Lambda's body says the email is verified; only Cognito's record counts.
    answer = post(server.url, lambda_body("uma", sub, "boss@example.com"))
    assert answer.status == 200 and answer.body["username"] == "uma"
    assert server.folders() == ["uma"]
    account = server.registry.get(sub)
    assert account is not None
    assert (account.name, account.cognito_username, account.email) == ("uma", "uma", None)


def test_an_unverified_email_does_not_stand_for_the_user(serve: Serve, cognito: Any) -> None:
    sub = _add_unverified(cognito, "uma", "boss@example.com")
    server = serve()
    answer = post(server.url, {"username": "boss@example.com", "user_attributes": {"sub": sub}})
    assert answer.status == 400
    assert answer.error == "username does not match the user with this sub"
    server.assert_untouched()


def test_an_email_alone_finds_nobody_while_that_email_is_unverified(serve: Serve) -> None:
    provider = FakeProvider()
    provider.add_user("uma", PASSWORD, "boss@example.com", email_verified=False)
    server = serve(provider)
    answer = post(server.url, {"email": "boss@example.com"})
    assert answer.status == 404
    assert answer.body == {"success": False, "error": "user not found in the identity provider"}
    assert provider.calls == 1
    server.assert_untouched()


def test_another_spelling_of_the_username_later_changes_nothing(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("Walt", PASSWORD, "walt@example.com")
    server = serve()
    first = post(server.url, lambda_body("Walt", sub, "walt@example.com"))
    assert first.status == 200 and first.body["created"] is True
    # Cognito's record moves on; provisioning again must not rewrite the account.
    cognito.boto.admin_update_user_attributes(
        UserPoolId=cognito.pool_id,
        Username="Walt",
        UserAttributes=[
            {"Name": "email", "Value": "heisenberg@example.org"},
            {"Name": "email_verified", "Value": "true"},
        ],
    )
    second = post(server.url, lambda_body("wALT", sub, "heisenberg@example.org"))
    assert second.status == 200
    assert (second.body["created"], second.body["username"]) == (False, "walt")
    assert server.registry.count() == 1 and server.folders() == ["walt"]
    account = server.registry.get(sub)
    assert account is not None
    assert (account.name, account.cognito_username, account.email) == (
        "walt",
        "Walt",
        "walt@example.com",
    )


def test_cognito_unavailable_is_503_with_retry_after_and_nothing_created(serve: Serve) -> None:
    provider = FakeProvider(fail_with=ProviderUnavailable("throttled", retry_after=7))
    server = serve(provider)
    answer = post(server.url, {"username": "jo"})
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "7"
    assert answer.body["success"] is False
    server.assert_untouched()


def test_gateway_misconfigured_is_500_and_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(FakeProvider(fail_with=ProviderMisconfigured("AccessDenied on AdminGetUser")))
    with caplog.at_level(logging.INFO, logger="gateway.provision"):
        answer = post(server.url, {"username": "jo"})
    assert answer.status == 500 and answer.body["success"] is False
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    server.assert_untouched()


def test_a_request_with_a_sub_makes_exactly_one_provider_call(serve: Serve) -> None:
    provider = FakeProvider()
    sub = provider.add_user("kim", PASSWORD, email_verified=True)
    server = serve(provider)
    answer = post(server.url, lambda_body("kim", sub, None))
    assert answer.status == 200 and answer.body["created"] is True
    assert provider.calls == 1
    assert provider.lookups_by_username == 1  # the named user read (AdminGetUser), no ListUsers
    made_up = post(server.url, lambda_body("kim", UNKNOWN_SUB, None))
    assert made_up.status == 404
    assert provider.calls == 3  # "kim" is another sub's: then looked for by sub, not found
    assert server.registry.get(UNKNOWN_SUB) is None
    assert server.registry.count() == 1 and server.folders() == ["kim"]


def test_a_request_with_a_sub_is_refused_while_cognito_is_down(serve: Serve) -> None:
    provider = FakeProvider()
    sub = provider.add_user("kim", PASSWORD, email_verified=True)
    provider.fail_with = ProviderUnavailable("throttled", retry_after=7)
    server = serve(provider)
    answer = post(server.url, lambda_body("kim", sub, None))
    assert answer.status == 503 and answer.headers["Retry-After"] == "7"
    assert provider.calls == 1
    server.assert_untouched()


# -- the API key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        pytest.param(None, {}, id="missing"),
        pytest.param("", {}, id="empty"),
        pytest.param("wrong-key-wrong-key", {}, id="wrong"),
        pytest.param(KEY[:-1], {}, id="prefix"),
        pytest.param(KEY + "k", {}, id="longer"),
        pytest.param(KEY.upper(), {}, id="other-case"),
        pytest.param(None, {"Authorization": f"Bearer {KEY}"}, id="key-in-authorization"),
        pytest.param(None, {"X-Api-Key-Fallback": KEY}, id="key-in-other-header"),
    ],
)
def test_missing_or_wrong_key_is_401_and_nothing_changes(
    serve: Serve, key: str | None, extra: dict[str, str]
) -> None:
    server = serve()
    answer = post(server.url, lambda_body("bob", UNKNOWN_SUB, None), key=key, headers=extra)
    assert answer.status == 401
    assert answer.body == {"success": False, "error": "missing or invalid API key"}
    assert "X-API-Key" in answer.headers["WWW-Authenticate"]
    server.assert_untouched()


def test_the_key_is_checked_before_the_body_is_looked_at(serve: Serve) -> None:
    server = serve()
    answer = post(server.url, raw=b"not json", key="wrong-key-wrong-key", content_type="text/plain")
    assert answer.status == 401


@pytest.mark.parametrize("keys", [(), (Secret(""),)], ids=["none", "empty"])
def test_no_key_configured_disables_the_route(serve: Serve, keys: tuple[Secret, ...]) -> None:
    server = serve(provision={"api_keys": keys})
    for key in (None, "", KEY):
        answer = post(server.url, lambda_body("bob", UNKNOWN_SUB, None), key=key)
        assert answer.status == 404
        assert answer.body == {"success": False, "error": "not found"}
    server.assert_untouched()


def test_two_keys_both_work_during_a_rotation_and_the_old_one_stops_after(
    serve: Serve, cognito: Any
) -> None:
    old = cognito.add_user("old", PASSWORD)
    new = cognito.add_user("new", PASSWORD)
    rotating = serve(provision={"api_keys": (Secret(KEY), Secret(NEW_KEY))})
    assert post(rotating.url, lambda_body("old", old, None), key=KEY).status == 200
    assert post(rotating.url, lambda_body("new", new, None), key=NEW_KEY).status == 200
    third = post(rotating.url, lambda_body("old", old, None), key="third-key-third-key")
    assert third.status == 401
    assert rotating.folders() == ["new", "old"]

    rotated = serve(provision={"api_keys": (Secret(NEW_KEY),)})
    assert post(rotated.url, lambda_body("old", old, None), key=KEY).status == 401
    rotated.assert_untouched()
    assert post(rotated.url, lambda_body("old", old, None), key=NEW_KEY).status == 200
    assert rotated.folders() == ["old"]


def test_the_log_names_the_key_slot_and_never_a_key(
    serve: Serve, cognito: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sub = cognito.add_user("lee", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY), Secret(NEW_KEY))})
    wrong = "wrong-but-secret-" + "w" * 10
    with caplog.at_level(logging.DEBUG):
        post(server.url, lambda_body("lee", sub, None), key=NEW_KEY)
        post(server.url, lambda_body("lee", sub, None), key=wrong)
    provisioned = [r for r in caplog.records if r.getMessage() == "user provisioned"]
    assert [(r.account, r.sub, r.new, r.key_slot) for r in provisioned] == [  # type: ignore[attr-defined]
        ("lee", sub, True, 1)
    ]
    everything = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    for secret in (KEY, NEW_KEY, wrong):
        assert secret not in everything


# -- transport-level refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_declared_json_is_415(serve: Serve, content_type: str | None) -> None:
    server = serve()
    answer = post(server.url, lambda_body("bob", UNKNOWN_SUB, None), content_type=content_type)
    assert answer.status == 415 and answer.body["success"] is False
    server.assert_untouched()


def test_json_with_a_charset_parameter_is_accepted(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve()
    answer = post(
        server.url, lambda_body("bob", sub, None), content_type="application/json; charset=utf-8"
    )
    assert answer.status == 200 and answer.body["username"] == "bob"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_400_before_anything_happens(serve: Serve, chunked: bool) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "max_body_bytes": 1024})
    body = lambda_body("bob", UNKNOWN_SUB, None)
    body["user_attributes"]["custom:padding"] = "p" * 2000
    answer = post(server.url, body, chunked=chunked)
    assert answer.status == 400
    assert answer.error == "request body larger than 1024 bytes"
    server.assert_untouched()


def test_a_body_exactly_at_the_cap_is_read(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY),), "max_body_bytes": 512})
    raw = b'{"username": "bob", "cognito_user_id": "' + sub.encode() + b'"}'
    raw = raw[:-1] + b" " * (512 - len(raw)) + b"}"
    assert len(raw) == 512
    answer = post(server.url, raw=raw)
    assert answer.status == 200 and answer.body["username"] == "bob"


def test_other_methods_are_not_served(serve: Serve) -> None:
    import urllib.error
    import urllib.request

    server = serve()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.url, timeout=10)  # noqa: S310 - loopback test server
    assert caught.value.code == 405


# -- the malformed-input table ----------------------------------------------------------------

_HUGE = "h" * 20_000


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"username=bob", "not valid JSON", id="form"),
        pytest.param(b"{'username': 'bob'}", "not valid JSON", id="single-quotes"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", id="binary"),
        pytest.param(b"[" * 5000, "not valid JSON", id="deep-nesting"),
        pytest.param(b"[]", "JSON object", id="array"),
        pytest.param(b'[{"username": "bob"}]', "JSON object", id="array-of-body"),
        pytest.param(b'"bob"', "JSON object", id="string"),
        pytest.param(b"null", "JSON object", id="null"),
        pytest.param(b"{}", "one of them is required", id="empty-object"),
        pytest.param(b'{"username": 1}', "must be a string", id="username-number"),
        pytest.param(b'{"username": {"$ne": 1}}', "must be a string", id="username-object"),
        pytest.param(b'{"username": "' + b"u" * 129 + b'"}', "longer than", id="long-username"),
        pytest.param(b'{"username": "' + _HUGE.encode() + b'"}', "larger than", id="huge-string"),
        pytest.param(b'{"username": "../../etc"}', "path syntax", id="traversal"),
        pytest.param(b'{"username": ".."}', "path syntax", id="dotdot"),
        pytest.param(b'{"username": "..\\\\x"}', "path syntax", id="backslash-traversal"),
        pytest.param(b'{"username": "a\\u0000b"}', "control", id="nul"),
        pytest.param(b'{"username": "a\\ud800"}', "control", id="lone-surrogate"),
        pytest.param(b'{"username": "\\u202eevil"}', "control", id="bidi-override"),
        pytest.param(b'{"username": "bob", "email": "x"}', "local@domain", id="bad-email"),
        pytest.param(
            b'{"username": "bob", "user_attributes": {"sub": "../../x"}}', "UUID", id="bad-sub"
        ),
        pytest.param(
            b'{"username": "bob", "user_attributes": [1]}', "must be an object", id="attrs"
        ),
    ],
)
def test_malformed_bodies_get_400_and_no_side_effects(
    serve: Serve, raw: bytes, problem: str
) -> None:
    provider = FakeProvider()
    server = serve(provider)
    answer = post(server.url, raw=raw)
    assert answer.status == 400, answer.body
    assert answer.body["success"] is False and problem in answer.error
    assert provider.calls == 0
    server.assert_untouched()


@pytest.mark.parametrize(
    ("username", "email", "account"),
    [
        ("Zoë", None, "zoe"),
        ("用户", None, "user"),
        ("Ünïcødé", "jürgen@exämple.de", "jurgen"),
        ("emoji😀", None, "emoji"),
        ("UPPER.Case_name", None, "upper.case_name"),
    ],
)
def test_unicode_names_provision_to_safe_folder_names(
    serve: Serve, cognito: Any, username: str, email: str | None, account: str
) -> None:
    sub = cognito.add_user(username, PASSWORD, email)
    server = serve()
    answer = post(server.url, lambda_body(username, sub, email))
    assert answer.status == 200
    assert answer.body["username"] == account
    assert answer.body["message"] == f"User {username} provisioned successfully"
    assert server.folders() == [account]


# -- the path prefix ------------------------------------------------------------------------


def test_with_a_prefix_both_the_prefixed_and_the_bare_path_work(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(server={"path_prefix": "/anki/"})
    assert server.url.endswith("/anki/provision-user")
    assert post(server.url, lambda_body("bob", sub, None)).body["created"] is True
    bare = post(server.base + "/provision-user", lambda_body("bob", sub, None))
    assert bare.status == 200 and bare.body["created"] is False
    elsewhere = post(server.base + "/other/provision-user", lambda_body("bob", sub, None))
    assert elsewhere.status == 404
    assert server.registry.count() == 1 and server.folders() == ["bob"]


# -- signatures -------------------------------------------------------------------------------


def _signed(server: ProvisionServer, body: bytes, secret: str = SIGNING, at: float | None = None):
    headers = signed_headers(secret, body, time.time() if at is None else at)
    return post(server.url, raw=body, headers=headers)


def test_with_a_signing_secret_a_signed_request_provisions(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + sub.encode() + b'"}'
    answer = _signed(server, raw)
    assert answer.status == 200 and answer.body["created"] is True
    assert server.folders() == ["bob"]


@pytest.mark.parametrize("case", ["unsigned", "wrong-secret", "stale", "future", "tampered"])
def test_with_a_signing_secret_bad_signatures_are_401(serve: Serve, case: str) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + UNKNOWN_SUB.encode() + b'"}'
    if case == "unsigned":
        answer = post(server.url, raw=raw)
    elif case == "wrong-secret":
        answer = _signed(server, raw, secret="another-secret-" + "y" * 20)
    elif case == "stale":
        answer = _signed(server, raw, at=time.time() - 301)
    elif case == "future":
        # A minute past the skew, not one second: on a loaded machine the request can take
        # seconds to reach the check, and the stamp would be back inside. The exact edge (±301)
        # is test_signature.py's, on an injected clock.
        answer = _signed(server, raw, at=time.time() + 360)
    else:
        headers = signed_headers(SIGNING, raw, time.time())
        answer = post(server.url, raw=raw.replace(b"bob", b"eve"), headers=headers)
    assert answer.status == 401 and answer.body["success"] is False
    server.assert_untouched()


def test_a_replayed_signed_request_is_401(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + sub.encode() + b'"}'
    headers = signed_headers(SIGNING, raw, time.time())
    assert post(server.url, raw=raw, headers=headers).status == 200
    replay = post(server.url, raw=raw, headers=headers)
    assert replay.status == 401 and "replay" in replay.error


def test_a_replay_is_refused_by_another_process_on_the_data_folder_and_after_a_restart(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + sub.encode() + b'"}'
    headers = signed_headers(SIGNING, raw, time.time())
    assert post(server.url, raw=raw, headers=headers).status == 200
    other = ProvisionServer(server.config, CognitoProvider(server.config.cognito)).start()
    try:
        replay = post(other.url, raw=raw, headers=headers)
        assert replay.status == 401 and "replay" in replay.error
    finally:
        other.stop()
    server.stop()
    restarted = ProvisionServer(server.config, CognitoProvider(server.config.cognito)).start()
    try:
        replay = post(restarted.url, raw=raw, headers=headers)
        assert replay.status == 401 and "replay" in replay.error
    finally:
        restarted.stop()


def test_ten_thousand_signed_junk_requests_do_not_lock_provisioning(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("bob", PASSWORD)
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    now = time.time()
    # One keep-alive connection per sending thread: the 10,000 requests, not 10,000 handshakes.
    opened: list[http.client.HTTPConnection] = []
    local = threading.local()
    port = urlsplit(server.url).port

    def junk(i: int) -> int:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            opened.append(local.conn)
        raw = b'{"junk": %d}' % i
        headers = signed_headers(SIGNING, raw, now)
        return post(server.url, raw=raw, headers=headers, conn=local.conn).status

    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = set(pool.map(junk, range(10_000)))
    finally:
        for conn in opened:
            conn.close()
    assert statuses == {400}
    raw = b'{"username": "bob", "cognito_user_id": "' + sub.encode() + b'"}'
    answer = _signed(server, raw)
    assert answer.status == 200 and answer.body["created"] is True


def test_a_signature_does_not_replace_the_key(serve: Serve) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + UNKNOWN_SUB.encode() + b'"}'
    answer = post(server.url, raw=raw, key=None, headers=signed_headers(SIGNING, raw, time.time()))
    assert answer.status == 401
    server.assert_untouched()


# -- idempotency under concurrency --------------------------------------------------------


def test_20_concurrent_calls_racing_first_logins_make_one_account_and_one_folder(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("racer", PASSWORD, "racer@example.com")
    server = serve()
    identity = Identity(sub, "racer", "racer@example.com")
    body = lambda_body("racer", sub, "racer@example.com")
    # Other gateway processes sharing the data folder: their own SQLite connections.
    others = [
        BlockingRegistry(
            SqliteRegistry(
                server.config.data_dir / "registry.sqlite3", server.config.collections_dir
            )
        )
        for _ in range(3)
    ]
    start = threading.Barrier(20 + 5 + len(others))
    created: list[bool] = []
    lock = threading.Lock()

    def provision() -> None:
        start.wait()
        answer = post(server.url, body)
        assert answer.status == 200, answer.body
        with lock:
            created.append(answer.body["created"])

    def login_here() -> None:
        # A first login in this process: ensure() on the loop thread, as LoginService runs it.
        start.wait()
        _, was_created = server.registry.ensure(identity)
        with lock:
            created.append(was_created)

    def login_elsewhere(registry: BlockingRegistry) -> None:
        start.wait()
        _, was_created = registry.ensure(identity)
        with lock:
            created.append(was_created)

    try:
        with ThreadPoolExecutor(max_workers=20 + 5 + len(others)) as pool:
            futures = [pool.submit(provision) for _ in range(20)]
            futures += [pool.submit(login_here) for _ in range(5)]
            futures += [pool.submit(login_elsewhere, r) for r in others]
            for future in futures:
                future.result(timeout=60)
    finally:
        for registry in others:
            registry.close()
    assert len(created) == 28
    assert created.count(True) == 1
    assert server.registry.count() == 1
    assert server.folders() == ["racer"]
    account = server.registry.get(sub)
    assert account is not None and account.name == "racer"
