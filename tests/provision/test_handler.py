"""POST /provision-user over real HTTP: keys, statuses, identity resolution, idempotency, races.

The app holds only this route (tests/provision/minimal_app.py), served on a loopback port, with
moto standing in for Cognito (CognitoProvider) or the FakeProvider for outages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.auth.cognito import CognitoProvider
from gateway.auth.fake import FakeProvider
from gateway.auth.identity import Identity, ProviderMisconfigured, ProviderUnavailable
from gateway.config import Config, Secret
from gateway.provision.signature import signed_headers
from gateway.registry import Registry
from tests.provision.minimal_app import KEY, NEW_KEY, ProvisionServer, lambda_body, post

SUB = "3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"
SIGNING = "signing-secret-" + "x" * 20

Serve = Callable[..., ProvisionServer]


@pytest.fixture
def serve(tmp_path: Path, cognito: Any) -> Iterator[Serve]:
    """`serve(provider=None, **sections)`: start the route; default provider is moto's Cognito."""
    started: list[ProvisionServer] = []

    def start(provider: Any = None, **sections: dict[str, Any]) -> ProvisionServer:
        sections.setdefault("provision", {"api_keys": (Secret(KEY),)})
        config: Config = cognito.config(tmp_path / f"data{len(started)}", **sections)
        server = ProvisionServer(config, provider or CognitoProvider(config.cognito)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- the happy path ---------------------------------------------------------------------------


def test_lambda_body_creates_the_account_and_its_folder(serve: Serve) -> None:
    server = serve()
    answer = post(server.url, lambda_body("testuser@example.com", SUB, "testuser@example.com"))
    assert answer.status == 200
    assert answer.body == {
        "success": True,
        "message": "User testuser@example.com provisioned successfully",
        "username": "testuser",
        "user_directory": "collections/testuser",
        "created": True,
    }
    assert answer.headers["Content-Type"].startswith("application/json")
    account = server.registry.get(SUB)
    assert account is not None and account.name == "testuser"
    assert account.cognito_username == "testuser@example.com"
    assert (server.config.data_dir / "collections" / "testuser").is_dir()


def test_second_call_answers_created_false_and_changes_nothing(serve: Serve) -> None:
    server = serve()
    body = lambda_body("bob", SUB, "bob@example.com")
    first, second = post(server.url, body), post(server.url, body)
    assert first.body["created"] is True
    assert second.status == 200 and second.body["created"] is False
    assert second.body["username"] == first.body["username"] == "bob"
    assert server.registry.count() == 1 and server.folders() == ["bob"]


def test_naming_matches_a_first_login_including_collisions(serve: Serve) -> None:
    server = serve()
    other = "0f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"
    # A first login with this identity would call exactly this.
    login_account, _ = server.on_loop(
        lambda: server.registry.ensure(Identity(other, "carol", "carol@example.com"))
    )
    answer = post(server.url, lambda_body("carol2", SUB, "carol@example.org"))
    assert login_account.name == "carol"
    assert answer.body["username"] == "carol-2"
    assert server.folders() == ["carol", "carol-2"]


def test_email_pool_users_get_readable_names_not_their_uuid_username(serve: Serve) -> None:
    server = serve()
    answer = post(server.url, lambda_body(SUB, SUB, "dave@example.com"))
    assert answer.body["username"] == "dave"


def test_unknown_fields_are_ignored(serve: Serve) -> None:
    server = serve()
    body = lambda_body("erin", SUB, None) | {"trigger": "x", "version": 2}
    assert post(server.url, body).status == 200


# -- identity resolution ----------------------------------------------------------------------


def test_manual_call_with_username_and_email_uses_the_sub_from_cognito(
    serve: Serve, cognito: Any
) -> None:
    sub = cognito.add_user("frank", "Passw0rd!x", "frank@example.com")
    server = serve()
    answer = post(server.url, {"username": "frank", "email": "frank@example.com"})
    assert answer.status == 200 and answer.body["created"] is True
    account = server.registry.get(sub)
    assert account is not None and account.name == "frank"


def test_old_made_up_cognito_user_id_falls_back_to_a_lookup(serve: Serve, cognito: Any) -> None:
    sub = cognito.add_user("gina", "Passw0rd!x", "gina@example.com")
    server = serve()
    body = {"username": "gina", "email": "gina@example.com", "cognito_user_id": "test-user-id"}
    assert post(server.url, body).status == 200
    assert server.registry.get(sub) is not None


def test_manual_call_with_email_only_in_an_email_pool(tmp_path: Path, cognito_email: Any) -> None:
    sub = cognito_email.add_user("hana@example.com", "Passw0rd!x", "hana@example.com")
    config = cognito_email.config(tmp_path, provision={"api_keys": (Secret(KEY),)})
    server = ProvisionServer(config, CognitoProvider(config.cognito)).start()
    try:
        answer = post(server.url, {"email": "hana@example.com"})
        assert answer.status == 200, answer.body
        assert answer.body["username"] == "hana"
        assert server.registry.get(sub) is not None
    finally:
        server.stop()


def test_unknown_user_is_404_with_a_clear_message_and_nothing_created(serve: Serve) -> None:
    server = serve()
    answer = post(server.url, {"username": "nobody", "email": "nobody@example.com"})
    assert answer.status == 404
    assert answer.body == {
        "success": False,
        "error": "user not found in the identity provider: nobody",
    }
    server.assert_untouched()


def test_a_sub_that_contradicts_cognito_is_refused(serve: Serve, cognito: Any) -> None:
    cognito.add_user("ivan@example.com", "Passw0rd!x", "ivan@example.com")
    server = serve()
    answer = post(server.url, {"email": "ivan@example.com", "user_attributes": {"sub": SUB}})
    assert answer.status == 400 and "does not match" in answer.error
    server.assert_untouched()


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


def test_a_request_with_a_sub_never_calls_the_provider(serve: Serve) -> None:
    provider = FakeProvider(fail_with=ProviderUnavailable("down"))
    server = serve(provider)
    assert post(server.url, lambda_body("kim", SUB, None)).status == 200
    assert provider.calls == 0


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
    answer = post(server.url, lambda_body("bob", SUB, None), key=key, headers=extra)
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
        answer = post(server.url, lambda_body("bob", SUB, None), key=key)
        assert answer.status == 404
        assert answer.body == {"success": False, "error": "not found"}
    server.assert_untouched()


def test_two_keys_both_work_during_a_rotation_and_the_old_one_stops_after(serve: Serve) -> None:
    rotating = serve(provision={"api_keys": (Secret(KEY), Secret(NEW_KEY))})
    assert post(rotating.url, lambda_body("old", SUB, None), key=KEY).status == 200
    other = "0f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b"
    assert post(rotating.url, lambda_body("new", other, None), key=NEW_KEY).status == 200
    assert post(rotating.url, lambda_body("x", SUB, None), key="third-key-third-key").status == 401

    rotated = serve(provision={"api_keys": (Secret(NEW_KEY),)})
    assert post(rotated.url, lambda_body("old", SUB, None), key=KEY).status == 401
    assert post(rotated.url, lambda_body("old", SUB, None), key=NEW_KEY).status == 200


def test_the_log_names_the_key_slot_and_never_a_key(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(provision={"api_keys": (Secret(KEY), Secret(NEW_KEY))})
    wrong = "wrong-but-secret-" + "w" * 10
    with caplog.at_level(logging.DEBUG):
        post(server.url, lambda_body("lee", SUB, None), key=NEW_KEY)
        post(server.url, lambda_body("lee", SUB, None), key=wrong)
    provisioned = [r for r in caplog.records if r.getMessage() == "user provisioned"]
    assert [(r.account, r.sub, r.new, r.key_slot) for r in provisioned] == [  # type: ignore[attr-defined]
        ("lee", SUB, True, 1)
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
    answer = post(server.url, lambda_body("bob", SUB, None), content_type=content_type)
    assert answer.status == 415 and answer.body["success"] is False
    server.assert_untouched()


def test_json_with_a_charset_parameter_is_accepted(serve: Serve) -> None:
    server = serve()
    answer = post(
        server.url, lambda_body("bob", SUB, None), content_type="application/json; charset=utf-8"
    )
    assert answer.status == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_400_before_anything_happens(serve: Serve, chunked: bool) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "max_body_bytes": 1024})
    body = lambda_body("bob", SUB, None)
    body["user_attributes"]["custom:padding"] = "p" * 2000
    answer = post(server.url, body, chunked=chunked)
    assert answer.status == 400
    assert answer.error == "request body larger than 1024 bytes"
    server.assert_untouched()


def test_a_body_exactly_at_the_cap_is_read(serve: Serve) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "max_body_bytes": 512})
    raw = b'{"username": "bob", "cognito_user_id": "' + SUB.encode() + b'"}'
    raw = raw[:-1] + b" " * (512 - len(raw)) + b"}"
    assert len(raw) == 512
    assert post(server.url, raw=raw).status == 200


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
    serve: Serve, username: str, email: str | None, account: str
) -> None:
    server = serve()
    answer = post(server.url, lambda_body(username, SUB, email))
    assert answer.status == 200
    assert answer.body["username"] == account
    assert answer.body["message"] == f"User {username} provisioned successfully"
    assert server.folders() == [account]


# -- the path prefix ------------------------------------------------------------------------


def test_with_a_prefix_both_the_prefixed_and_the_bare_path_work(serve: Serve) -> None:
    server = serve(server={"path_prefix": "/anki/"})
    assert server.url.endswith("/anki/provision-user")
    assert post(server.url, lambda_body("bob", SUB, None)).body["created"] is True
    bare = post(server.base + "/provision-user", lambda_body("bob", SUB, None))
    assert bare.status == 200 and bare.body["created"] is False
    assert post(server.base + "/other/provision-user", lambda_body("bob", SUB, None)).status == 404


# -- signatures -------------------------------------------------------------------------------


def _signed(server: ProvisionServer, body: bytes, secret: str = SIGNING, at: float | None = None):
    headers = signed_headers(secret, body, time.time() if at is None else at)
    return post(server.url, raw=body, headers=headers)


def test_with_a_signing_secret_a_signed_request_provisions(serve: Serve) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + SUB.encode() + b'"}'
    assert _signed(server, raw).status == 200


@pytest.mark.parametrize("case", ["unsigned", "wrong-secret", "stale", "future", "tampered"])
def test_with_a_signing_secret_bad_signatures_are_401(serve: Serve, case: str) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + SUB.encode() + b'"}'
    if case == "unsigned":
        answer = post(server.url, raw=raw)
    elif case == "wrong-secret":
        answer = _signed(server, raw, secret="another-secret-" + "y" * 20)
    elif case == "stale":
        answer = _signed(server, raw, at=time.time() - 301)
    elif case == "future":
        answer = _signed(server, raw, at=time.time() + 301)
    else:
        headers = signed_headers(SIGNING, raw, time.time())
        answer = post(server.url, raw=raw.replace(b"bob", b"eve"), headers=headers)
    assert answer.status == 401 and answer.body["success"] is False
    server.assert_untouched()


def test_a_replayed_signed_request_is_401(serve: Serve) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + SUB.encode() + b'"}'
    headers = signed_headers(SIGNING, raw, time.time())
    assert post(server.url, raw=raw, headers=headers).status == 200
    replay = post(server.url, raw=raw, headers=headers)
    assert replay.status == 401 and "replay" in replay.error


def test_a_signature_does_not_replace_the_key(serve: Serve) -> None:
    server = serve(provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)})
    raw = b'{"username": "bob", "cognito_user_id": "' + SUB.encode() + b'"}'
    answer = post(server.url, raw=raw, key=None, headers=signed_headers(SIGNING, raw, time.time()))
    assert answer.status == 401
    server.assert_untouched()


# -- idempotency under concurrency --------------------------------------------------------


def test_20_concurrent_calls_racing_first_logins_make_one_account_and_one_folder(
    serve: Serve,
) -> None:
    server = serve()
    identity = Identity(SUB, "racer", "racer@example.com")
    body = lambda_body("racer", SUB, "racer@example.com")
    # Other gateway processes sharing the data folder: their own SQLite connections.
    others = [
        Registry(server.config.data_dir / "registry.sqlite3", server.config.collections_dir)
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
        _, was_created = server.on_loop(lambda: server.registry.ensure(identity))
        with lock:
            created.append(was_created)

    def login_elsewhere(registry: Registry) -> None:
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
    account = server.registry.get(SUB)
    assert account is not None and account.name == "racer"
