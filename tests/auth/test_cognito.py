"""CognitoProvider against moto (what moto can produce) and against botocore's Stubber or a small
fake client (what moto cannot: SECRET_HASH checks, throttling, 5xx, timeouts, lockout, MFA)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
    SSLError,
)
from botocore.stub import Stubber

from gateway.config import CognitoConfig, Secret
from gateway.identity.cognito import (
    CognitoProvider,
    classify,
    classify_exception,
    identity_from_id_token,
    is_possible_password,
    is_possible_username,
    make_client,
    secret_hash,
)
from gateway.identity.provider import (
    BadCredentials,
    ChallengeRequired,
    Identity,
    ImpossibleCredentials,
    LockedOut,
    ProviderMisconfigured,
    ProviderUnavailable,
    RefusedByOperator,
    UnknownUser,
)

if TYPE_CHECKING:
    from conftest import CognitoPool

REGION = "eu-west-1"
POOL_ID = "eu-west-1_TestPool"
CLIENT_ID = "client123abc"
CLIENT_SECRET = "client-secret-value-1234567890"
PASSWORD = "Correct-Horse-9!"


def make_id_token(**claims: Any) -> str:
    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2lnbmF0dXJl"


def token_response(**claims: Any) -> dict[str, Any]:
    claims = {"sub": "sub-1", "cognito:username": "alice", **claims}
    return {
        "AuthenticationResult": {
            "IdToken": make_id_token(**claims),
            "AccessToken": "access",
            "TokenType": "Bearer",
            "ExpiresIn": 3600,
        },
        "ChallengeParameters": {},
    }


def stub_config(**overrides: Any) -> CognitoConfig:
    return replace(
        CognitoConfig(user_pool_id=POOL_ID, client_id=CLIENT_ID, region=REGION), **overrides
    )


class FakeClient:
    """A cognito-idp client stand-in: records each request; `answer` returns or raises."""

    def __init__(self, answer: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None):
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.answer = answer or (lambda operation, params: token_response())
        self.closed = False

    def admin_initiate_auth(self, **params: Any) -> dict[str, Any]:
        self.requests.append(("admin_initiate_auth", params))
        return self.answer("admin_initiate_auth", params)

    def admin_get_user(self, **params: Any) -> dict[str, Any]:
        self.requests.append(("admin_get_user", params))
        return self.answer("admin_get_user", params)

    def close(self) -> None:
        self.closed = True


def raising(exc: Exception) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    def answer(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        raise exc

    return answer


@pytest.fixture
async def stubbed() -> AsyncIterator[Callable[..., tuple[CognitoProvider, Stubber]]]:
    """`stubbed(**config)` → a provider on a real boto3 client wrapped in an active Stubber."""
    made: list[tuple[CognitoProvider, Stubber]] = []

    def make(**overrides: Any) -> tuple[CognitoProvider, Stubber]:
        client = boto3.client("cognito-idp", region_name=REGION)
        stubber = Stubber(client)
        stubber.activate()
        made.append((CognitoProvider(stub_config(**overrides), client=client), stubber))
        return made[-1]

    yield make
    for provider, stubber in made:
        await provider.close()
        stubber.deactivate()


@pytest.fixture
def cognito_secret(cognito: CognitoPool) -> CognitoPool:
    """The moto pool with an app client that has a secret (moto accepts any SECRET_HASH)."""
    client = cognito.boto.create_user_pool_client(
        UserPoolId=cognito.pool_id,
        ClientName="gateway-with-secret",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH"],
    )["UserPoolClient"]
    return replace(cognito, client_id=client["ClientId"], client_secret=client["ClientSecret"])


@pytest.fixture
async def provider(cognito: CognitoPool, tmp_path: Path) -> AsyncIterator[CognitoProvider]:
    p = CognitoProvider(cognito.config(tmp_path).cognito)
    yield p
    await p.close()


# --- against moto ----------------------------------------------------------------------------


async def test_authenticate_returns_sub_username_and_email(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("alice", PASSWORD, email="alice@example.com")

    identity = await provider.authenticate("alice", PASSWORD)

    assert identity == Identity(sub=sub, username="alice", email="alice@example.com")
    assert provider.calls == 1


async def test_authenticate_accepts_the_old_admin_no_srp_auth_flow_name(
    cognito: CognitoPool, tmp_path: Path
) -> None:
    sub = cognito.add_user("alice", PASSWORD)
    config = replace(cognito.config(tmp_path).cognito, auth_flow="ADMIN_NO_SRP_AUTH")
    provider = CognitoProvider(config)
    try:
        assert (await provider.authenticate("alice", PASSWORD)).sub == sub
    finally:
        await provider.close()


async def test_authenticate_with_a_client_secret_pool_succeeds(
    cognito_secret: CognitoPool, tmp_path: Path
) -> None:
    sub = cognito_secret.add_user("alice", PASSWORD)
    provider = CognitoProvider(cognito_secret.config(tmp_path).cognito)
    try:
        assert (await provider.authenticate("alice", PASSWORD)).sub == sub
    finally:
        await provider.close()


async def test_login_by_email_in_an_email_pool_gives_uuid_username_and_the_email(
    cognito_email: CognitoPool, tmp_path: Path
) -> None:
    sub = cognito_email.add_user("bob@example.com", PASSWORD, email="bob@example.com")
    provider = CognitoProvider(cognito_email.config(tmp_path).cognito)
    try:
        identity = await provider.authenticate("bob@example.com", PASSWORD)
    finally:
        await provider.close()

    assert identity.sub == sub
    assert identity.email == "bob@example.com"
    assert identity.username != "bob@example.com"
    assert len(identity.username) == 36  # Cognito gives email-pool users a UUID username


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "disabled user"])
async def test_refused_logins_are_bad_credentials(
    cognito: CognitoPool, provider: CognitoProvider, case: str
) -> None:
    cognito.add_user("alice", PASSWORD)
    username, password = "alice", PASSWORD
    if case == "wrong password":
        password = "Wrong-Password-1!"
    elif case == "unknown user":
        username = "mallory"
    else:
        cognito.disable("alice")

    with pytest.raises(BadCredentials) as info:
        await provider.authenticate(username, password)

    assert info.value.status == 403
    assert provider.calls == 1


async def test_user_with_only_a_temporary_password_must_set_a_new_one_on_the_web(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    cognito.boto.admin_create_user(
        UserPoolId=cognito.pool_id,
        Username="newbie",
        TemporaryPassword="Temp0rary-Pass!",
        MessageAction="SUPPRESS",
    )

    with pytest.raises(ChallengeRequired) as info:
        await provider.authenticate("newbie", "Temp0rary-Pass!")

    assert info.value.challenge == "NEW_PASSWORD_REQUIRED"
    assert info.value.status == 403


@pytest.mark.parametrize(
    "field, value",
    [("user_pool_id", "eu-west-1_DoesNotExist"), ("client_id", "no-such-client")],
)
async def test_wrong_pool_or_client_id_is_misconfigured_and_logged_at_error(
    cognito: CognitoPool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    field: str,
    value: str,
) -> None:
    cognito.add_user("alice", PASSWORD)
    provider = CognitoProvider(replace(cognito.config(tmp_path).cognito, **{field: value}))
    try:
        with pytest.raises(ProviderMisconfigured) as info:
            await provider.authenticate("alice", PASSWORD)
    finally:
        await provider.close()

    assert info.value.status == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("ResourceNotFoundException" in r.getMessage() for r in errors)


async def test_lookup_returns_the_identity_of_a_user(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("alice", PASSWORD, email="alice@example.com")

    assert await provider.lookup("alice") == Identity(sub, "alice", "alice@example.com")
    assert provider.calls == 1


async def test_lookup_by_email_in_an_email_pool_gives_the_uuid_username(
    cognito_email: CognitoPool, tmp_path: Path
) -> None:
    sub = cognito_email.add_user("bob@example.com", PASSWORD, email="bob@example.com")
    provider = CognitoProvider(cognito_email.config(tmp_path).cognito)
    try:
        identity = await provider.lookup("bob@example.com")
    finally:
        await provider.close()

    assert (identity.sub, identity.email) == (sub, "bob@example.com")
    assert identity.username != "bob@example.com"


async def test_lookup_of_an_unknown_user_raises_unknown_user(provider: CognitoProvider) -> None:
    with pytest.raises(UnknownUser):
        await provider.lookup("nobody")
    assert provider.calls == 1


async def test_lookup_sub_finds_the_user_by_sub_with_one_list_users_call(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("alice", PASSWORD, email="alice@example.com")
    cognito.add_user("bob", PASSWORD, email="bob@example.com")

    assert await provider.lookup_sub(sub) == Identity(sub, "alice", "alice@example.com")
    assert provider.calls == 1
    cognito.disable("alice")
    assert (await provider.lookup_sub(sub)).enabled is False


async def test_lookup_sub_of_no_user_is_unknown_user(provider: CognitoProvider) -> None:
    with pytest.raises(UnknownUser):
        await provider.lookup_sub("3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b")
    assert provider.calls == 1


@pytest.mark.parametrize(
    "sub", ['x" or sub ^= "', "", "alice", "3F2A9C1E-4B5D-4E6F-8A7B-9C0D1E2F3A4B"]
)
async def test_a_sub_of_another_shape_is_never_sent_and_never_means_deleted(
    provider: CognitoProvider, sub: str
) -> None:
    # Filter syntax never reaches Cognito; a bad stored sub is our problem (500, postponed
    # re-checks), not a deleted user (which would log the user out).
    with pytest.raises(ProviderMisconfigured):
        await provider.lookup_sub(sub)
    assert provider.calls == 0


async def test_a_spelling_with_capitals_is_tried_once_more_in_lower_case(
    cognito_email: CognitoPool, tmp_path: Path
) -> None:
    # moto compares usernames case-sensitively, like a pool created with CaseSensitive=true.
    sub = cognito_email.add_user("case.user@example.com", PASSWORD, "case.user@example.com")
    provider = CognitoProvider(cognito_email.config(tmp_path).cognito)
    try:
        identity = await provider.authenticate("Case.User@example.com", PASSWORD)
        assert (identity.sub, identity.email, provider.calls) == (
            sub,
            "case.user@example.com",
            2,
        )
        with pytest.raises(BadCredentials):
            await provider.authenticate("Case.User@example.com", "wrong-password")
        assert provider.calls == 4  # a wrong password: also two calls, then refused
        with pytest.raises(BadCredentials):
            await provider.authenticate("case.user@example.com", "wrong-password")
        assert provider.calls == 5  # already lower case: one call
    finally:
        await provider.close()


async def test_a_disabled_user_typed_in_lower_case_is_not_tried_again(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    cognito.add_user("lower", PASSWORD, "lower@example.com")
    cognito.disable("lower")
    with pytest.raises(BadCredentials):
        await provider.authenticate("lower", PASSWORD)
    assert provider.calls == 1


async def test_a_token_without_email_verified_is_settled_with_one_lookup(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("nora", PASSWORD, "nora@example.com", email_verified=None)
    assert await provider.authenticate("nora", PASSWORD) == Identity(sub, "nora", None)
    assert provider.calls == 2  # moto's token has no email_verified claim at all


async def test_an_unverified_email_is_not_part_of_the_identity(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("mallory", PASSWORD, "victim@example.com", email_verified=False)
    unverified = Identity(sub, "mallory", None)
    # The IdToken carries email_verified "false": no lookup needed.
    assert await provider.authenticate("mallory", PASSWORD) == unverified
    assert provider.calls == 1
    assert await provider.lookup("mallory") == unverified
    assert await provider.lookup_sub(sub) == unverified


async def test_no_password_token_or_secret_in_any_log_record_even_at_debug(
    cognito_secret: CognitoPool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = cognito_secret
    pool.add_user("alice", PASSWORD)
    config = pool.config(tmp_path).cognito
    caplog.set_level(logging.DEBUG)
    provider = CognitoProvider(config)
    broken = CognitoProvider(replace(config, user_pool_id="eu-west-1_Nope"))
    try:
        await provider.authenticate("alice", PASSWORD)
        with pytest.raises(BadCredentials):
            await provider.authenticate("alice", PASSWORD + "x")
        await provider.lookup("alice")
        with pytest.raises(ProviderMisconfigured):
            await broken.authenticate("alice", PASSWORD)
    finally:
        await provider.close()
        await broken.close()

    assert pool.client_secret
    forbidden = {
        "password": PASSWORD,
        "client secret": pool.client_secret,
        "SECRET_HASH": secret_hash("alice", pool.client_id, pool.client_secret),
        "a JWT": "eyJ",  # every JWT starts with base64url('{"')
    }
    # The capture must have been live at DEBUG, botocore included, for this test to mean anything.
    assert any(r.name.startswith("botocore") and r.levelno == logging.DEBUG for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        for what, value in forbidden.items():
            assert value not in text, f"{what} logged by {record.name}"


# --- against botocore's Stubber ----------------------------------------------------------------


async def test_secret_hash_is_hmac_sha256_of_username_and_client_id(stubbed: Any) -> None:
    provider, stubber = stubbed(client_secret=Secret(CLIENT_SECRET))
    stubber.add_response(
        "admin_initiate_auth",
        token_response(),
        expected_params={
            "UserPoolId": POOL_ID,
            "ClientId": CLIENT_ID,
            "AuthFlow": "ADMIN_USER_PASSWORD_AUTH",
            "AuthParameters": {
                "USERNAME": "alice@example.com",
                "PASSWORD": PASSWORD,
                # base64(HMAC_SHA256(key=client secret, msg="alice@example.com" + CLIENT_ID))
                "SECRET_HASH": "+i4FINUigOPAf4VyJq11YZ/yBafjFbSgIUtI1YS5iBI=",
            },
        },
    )

    await provider.authenticate("alice@example.com", PASSWORD)

    stubber.assert_no_pending_responses()


async def test_no_secret_hash_is_sent_without_a_client_secret(stubbed: Any) -> None:
    provider, stubber = stubbed(auth_flow="ADMIN_NO_SRP_AUTH")
    stubber.add_response(
        "admin_initiate_auth",
        token_response(),
        expected_params={
            "UserPoolId": POOL_ID,
            "ClientId": CLIENT_ID,
            "AuthFlow": "ADMIN_NO_SRP_AUTH",
            "AuthParameters": {"USERNAME": "alice", "PASSWORD": PASSWORD},
        },
    )

    await provider.authenticate("alice", PASSWORD)

    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    "challenge",
    [
        "NEW_PASSWORD_REQUIRED",
        "SMS_MFA",
        "SOFTWARE_TOKEN_MFA",
        "MFA_SETUP",
        "EMAIL_OTP",
        "SELECT_MFA_TYPE",
    ],
)
async def test_any_challenge_refuses_the_login_naming_it(stubbed: Any, challenge: str) -> None:
    provider, stubber = stubbed()
    stubber.add_response(
        "admin_initiate_auth",
        {"ChallengeName": challenge, "Session": "s" * 40, "ChallengeParameters": {}},
    )

    with pytest.raises(ChallengeRequired) as info:
        await provider.authenticate("alice", PASSWORD)

    assert info.value.challenge == challenge


async def test_answer_with_neither_tokens_nor_challenge_is_misconfigured(stubbed: Any) -> None:
    provider, stubber = stubbed()
    stubber.add_response("admin_initiate_auth", {"ChallengeParameters": {}})

    with pytest.raises(ProviderMisconfigured):
        await provider.authenticate("alice", PASSWORD)


@pytest.mark.parametrize(
    "code, message, status, expected, retry_after",
    [
        ("TooManyRequestsException", "Rate exceeded", 400, ProviderUnavailable, 5),
        ("LimitExceededException", "Limit exceeded", 400, ProviderUnavailable, 5),
        ("InternalErrorException", "Internal error", 500, ProviderUnavailable, 5),
        ("ServiceUnavailable", "", 503, ProviderUnavailable, 5),
        ("NotAuthorizedException", "Password attempts exceeded", 400, LockedOut, 60),
        ("UserNotConfirmedException", "User is not confirmed.", 400, BadCredentials, None),
        ("PasswordResetRequiredException", "Reset required", 400, BadCredentials, None),
        ("AccessDeniedException", "not authorized to perform", 400, ProviderMisconfigured, None),
        ("UnrecognizedClientException", "invalid token", 400, ProviderMisconfigured, None),
    ],
)
async def test_cognito_errors_map_to_the_gateway_answer(
    stubbed: Any,
    code: str,
    message: str,
    status: int,
    expected: type[Exception],
    retry_after: int | None,
) -> None:
    provider, stubber = stubbed()
    stubber.add_client_error("admin_initiate_auth", code, message, http_status_code=status)

    with pytest.raises(expected) as info:
        await provider.authenticate("alice", PASSWORD)

    assert type(info.value) is expected
    assert info.value.retry_after == retry_after  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("UserNotFoundException", 400, UnknownUser),
        ("TooManyRequestsException", 400, ProviderUnavailable),
        ("InternalErrorException", 500, ProviderUnavailable),
        ("AccessDeniedException", 400, ProviderMisconfigured),
        ("ResourceNotFoundException", 400, ProviderMisconfigured),
    ],
)
async def test_lookup_errors_map_to_the_gateway_answer(
    stubbed: Any, code: str, status: int, expected: type[Exception]
) -> None:
    provider, stubber = stubbed()
    stubber.add_client_error("admin_get_user", code, "", http_status_code=status)

    with pytest.raises(expected):
        await provider.lookup("alice")


# --- against a fake client ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/"),
        ConnectTimeoutError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/"),
        ReadTimeoutError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/"),
        ConnectionClosedError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/"),
        SSLError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/", error="reset"),
    ],
    ids=lambda exc: type(exc).__name__,
)
@pytest.mark.parametrize("operation", ["authenticate", "lookup"])
async def test_network_failures_are_unavailable_with_retry_after(
    exc: Exception, operation: str
) -> None:
    provider = CognitoProvider(stub_config(), client=FakeClient(raising(exc)))
    try:
        with pytest.raises(ProviderUnavailable) as info:
            if operation == "authenticate":
                await provider.authenticate("alice", PASSWORD)
            else:
                await provider.lookup("alice")
    finally:
        await provider.close()

    assert (info.value.status, info.value.retry_after) == (503, 5)


@pytest.mark.parametrize(
    "exc",
    [NoCredentialsError(), NoRegionError(), ParamValidationError(report="bad")],
    ids=lambda exc: type(exc).__name__,
)
async def test_missing_credentials_and_other_boto_errors_are_misconfigured(exc: Exception) -> None:
    provider = CognitoProvider(stub_config(), client=FakeClient(raising(exc)))
    try:
        with pytest.raises(ProviderMisconfigured):
            await provider.authenticate("alice", PASSWORD)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    "username",
    [
        "",
        "a" * 129,
        "al\x00ice",
        "al ice",
        "alice\n",
        "\talice",
        "ali\x7fce",
        "ali\u00a0ce",
        "a\u200bb",
    ],
)
async def test_impossible_usernames_are_refused_without_a_call(username: str) -> None:
    client = FakeClient()
    provider = CognitoProvider(stub_config(), client=client)
    try:
        with pytest.raises(BadCredentials):
            await provider.authenticate(username, PASSWORD)
        with pytest.raises(UnknownUser):
            await provider.lookup(username)
    finally:
        await provider.close()

    assert (provider.calls, client.requests) == (0, [])


@pytest.mark.parametrize(
    "password",
    [
        "",
        "p" * 257,
        "12345",  # no pool may ask for fewer than 6 characters
        " " * 8,
        " " + PASSWORD,
        PASSWORD + " ",
        PASSWORD + "\n",
        "\t" + PASSWORD,
        PASSWORD + "\r\n",
    ],
)
async def test_impossible_passwords_are_refused_without_a_call(password: str) -> None:
    client = FakeClient()
    provider = CognitoProvider(stub_config(), client=client)
    try:
        with pytest.raises(ImpossibleCredentials):
            await provider.authenticate("alice", password)
    finally:
        await provider.close()

    assert (provider.calls, client.requests) == (0, [])


@pytest.mark.parametrize(
    "username, password",
    [
        ("a" * 128, PASSWORD),
        ("../x", PASSWORD),
        ("alice+anki@example.com", PASSWORD),
        ("Jürgen_Ωmega", PASSWORD),
        ("alice", "p" * 256),
        ("alice", "123456"),
        ("alice", "spaces are fine inside a password"),
        # Not white space to Cognito's pattern (Java's \s is ASCII): sent, Cognito decides.
        ("alice", "\u00a0nbsp-edged\u00a0"),
    ],
)
async def test_possible_usernames_and_passwords_are_sent_unchanged(
    username: str, password: str
) -> None:
    client = FakeClient()
    provider = CognitoProvider(stub_config(), client=client)
    try:
        await provider.authenticate(username, password)
    finally:
        await provider.close()

    assert provider.calls == 1
    [(_, params)] = client.requests
    assert params["AuthParameters"] == {"USERNAME": username, "PASSWORD": password}


async def test_concurrent_logins_run_in_the_thread_pool_not_on_the_loop() -> None:
    # Every call blocks until the loop itself releases it, and the loop does so only once all four
    # are in flight: that completes only if the calls run in parallel threads while the loop stays
    # free. Run on the loop's thread, the first call would block everything and time out.
    loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()
    entered: list[int] = []
    all_entered = asyncio.Event()
    release = threading.Event()

    def answer(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        entered.append(threading.get_ident())
        if len(entered) == 4:
            loop.call_soon_threadsafe(all_entered.set)
        if not release.wait(timeout=5):
            raise AssertionError("the event loop never released the calls")
        return token_response()

    provider = CognitoProvider(stub_config(max_concurrency=4), client=FakeClient(answer))
    try:
        logins = asyncio.gather(*(provider.authenticate(f"user{i}", PASSWORD) for i in range(4)))
        await asyncio.wait_for(all_entered.wait(), timeout=5)
        release.set()
        await logins
    finally:
        release.set()
        await provider.close()

    assert len(set(entered)) == 4 and loop_thread not in entered
    assert provider.calls == 4


async def test_calls_in_flight_never_exceed_max_concurrency() -> None:
    lock = threading.Lock()
    pair = threading.Barrier(2, timeout=5)  # two calls must overlap, or this times out
    in_flight = peak = 0

    def answer(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        pair.wait()
        time.sleep(0.02)  # time for a third call to show up, were the pool larger
        with lock:
            in_flight -= 1
        return token_response()

    provider = CognitoProvider(stub_config(max_concurrency=2), client=FakeClient(answer))
    try:
        await asyncio.gather(*(provider.authenticate(f"user{i}", PASSWORD) for i in range(8)))
    finally:
        await provider.close()

    assert peak == 2


async def test_after_close_calls_are_unavailable_and_an_injected_client_stays_open() -> None:
    client = FakeClient()
    provider = CognitoProvider(stub_config(), client=client)
    await provider.close()
    await provider.close()  # idempotent

    with pytest.raises(ProviderUnavailable):
        await provider.authenticate("alice", PASSWORD)
    assert (provider.calls, client.requests, client.closed) == (0, [], False)


async def test_a_pre_authentication_trigger_refusal_is_a_403_with_its_reason_logged(
    stubbed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Cognito's answer when the operator's PreAuthentication Lambda raises (moto runs no
    # triggers): the operator refusing this user, not a misconfigured gateway.
    caplog.set_level(logging.INFO)
    provider, stubber = stubbed()
    stubber.add_client_error(
        "admin_initiate_auth",
        "UserLambdaValidationException",
        "PreAuthentication failed with error Account on hold: unpaid invoice.",
        http_status_code=400,
    )
    with pytest.raises(RefusedByOperator) as info:
        await provider.authenticate("alice", PASSWORD)
    assert info.value.status == 403
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(
        level == logging.WARNING and "Account on hold: unpaid invoice" in text
        for level, text in messages
    )
    assert not any("MISCONFIGURED" in text for _, text in messages)


async def test_bad_credentials_log_the_reason_code_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    error = ClientError(
        {"Error": {"Code": "UserNotConfirmedException", "Message": "alice"}}, "AdminInitiateAuth"
    )
    provider = CognitoProvider(stub_config(), client=FakeClient(raising(error)))
    try:
        with pytest.raises(BadCredentials):
            await provider.authenticate("alice", PASSWORD)
    finally:
        await provider.close()

    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("UserNotConfirmedException" in m for m in infos)


# --- pure parts ------------------------------------------------------------------------------


def test_make_client_applies_timeouts_pool_size_retries_region_and_endpoint() -> None:
    config = CognitoConfig(
        user_pool_id="ap-southeast-2_AbC",
        client_id=CLIENT_ID,
        connect_timeout=1.5,
        read_timeout=2.5,
        max_concurrency=7,
        endpoint_url="http://127.0.0.1:5000",
    )
    client = make_client(config)

    assert client.meta.region_name == "ap-southeast-2"
    assert client.meta.endpoint_url == "http://127.0.0.1:5000"
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (1.5, 2.5)
    assert client.meta.config.max_pool_connections == 7
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    client.close()


def test_make_client_uses_aws_when_no_endpoint_is_configured() -> None:
    client = make_client(stub_config())
    assert client.meta.endpoint_url == "https://cognito-idp.eu-west-1.amazonaws.com"
    client.close()


@pytest.mark.parametrize(
    "code, message, status, lookup, expected",
    [
        ("NotAuthorizedException", "Incorrect username or password.", 400, False, BadCredentials),
        ("NotAuthorizedException", "User is disabled.", 400, False, BadCredentials),
        ("NotAuthorizedException", "Password attempts exceeded", 400, False, LockedOut),
        ("UserNotFoundException", "User does not exist.", 400, False, BadCredentials),
        ("UserNotConfirmedException", "", 400, False, BadCredentials),
        ("PasswordResetRequiredException", "", 400, False, BadCredentials),
        ("TooManyRequestsException", "Rate exceeded", 400, False, ProviderUnavailable),
        ("LimitExceededException", "", 400, False, ProviderUnavailable),
        ("InternalErrorException", "", 500, False, ProviderUnavailable),
        ("ThrottlingException", "", 400, False, ProviderUnavailable),
        ("SomethingNew", "", 502, False, ProviderUnavailable),
        ("", "", 503, False, ProviderUnavailable),
        ("InvalidParameterException", "Auth flow not enabled", 400, False, ProviderMisconfigured),
        ("ResourceNotFoundException", "", 400, False, ProviderMisconfigured),
        ("AccessDeniedException", "", 400, False, ProviderMisconfigured),
        ("UnrecognizedClientException", "", 400, False, ProviderMisconfigured),
        ("InvalidUserPoolConfigurationException", "", 400, False, ProviderMisconfigured),
        ("SomethingNew", "", 400, False, ProviderMisconfigured),
        ("SomethingNew", "", None, False, ProviderMisconfigured),
        (
            "UserLambdaValidationException",
            "PreAuthentication failed",
            400,
            False,
            RefusedByOperator,
        ),
        ("UserNotFoundException", "", 400, True, UnknownUser),
        ("TooManyRequestsException", "", 400, True, ProviderUnavailable),
        ("InternalErrorException", "", 500, True, ProviderUnavailable),
        ("NotAuthorizedException", "", 400, True, ProviderMisconfigured),
        ("AccessDeniedException", "", 400, True, ProviderMisconfigured),
    ],
)
def test_classify_maps_every_cognito_error(
    code: str, message: str, status: int | None, lookup: bool, expected: type[Exception]
) -> None:
    assert type(classify(code, message, status, lookup=lookup)) is expected


def test_classify_exception_scrubs_hidden_strings_from_echoed_messages() -> None:
    error = ClientError(
        {
            "Error": {"Code": "InvalidParameterException", "Message": f"bad value {PASSWORD}"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "AdminInitiateAuth",
    )
    mapped = classify_exception(error, hide=(PASSWORD, ""))
    assert isinstance(mapped, ProviderMisconfigured)
    assert PASSWORD not in mapped.detail and "[redacted]" in mapped.detail


def test_secret_hash_matches_a_known_value() -> None:
    expected = "+i4FINUigOPAf4VyJq11YZ/yBafjFbSgIUtI1YS5iBI="
    assert secret_hash("alice@example.com", CLIENT_ID, CLIENT_SECRET) == expected


@pytest.mark.parametrize(
    "claims, expected",
    [
        # Only a verified email is kept (issue: an unverified email must not name accounts).
        (
            {"sub": "s", "cognito:username": "u", "email": "e@x.org", "email_verified": True},
            (Identity("s", "u", "e@x.org"), False),
        ),
        (
            {"sub": "s", "cognito:username": "u", "email": "e@x.org", "email_verified": "true"},
            (Identity("s", "u", "e@x.org"), False),
        ),
        (
            {"sub": "s", "cognito:username": "u", "email": "v@x.org", "email_verified": False},
            (Identity("s", "u", None), False),
        ),
        # An email without the claim (moto) is unsettled: the provider asks Cognito.
        (
            {"sub": "s", "cognito:username": "u", "email": "é@ü.de"},
            (Identity("s", "u", None), True),
        ),
        # No email claim: no email, whatever the user typed (no fallback to the typed name).
        ({"sub": "s", "cognito:username": "u"}, (Identity("s", "u", None), False)),
        ({"sub": "s" * 7, "cognito:username": "uu"}, (Identity("s" * 7, "uu", None), False)),
    ],
)
def test_identity_comes_from_id_token_claims(
    claims: dict[str, Any], expected: tuple[Identity, bool]
) -> None:
    assert identity_from_id_token(make_id_token(**claims)) == expected


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"not json").decode() + ".c",
        "a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c",
        make_id_token(**{"cognito:username": "u"}),
        make_id_token(sub="s"),
        make_id_token(sub="", **{"cognito:username": "u"}),
    ],
)
def test_unusable_id_tokens_are_misconfigured(token: str) -> None:
    with pytest.raises(ProviderMisconfigured):
        identity_from_id_token(token)


def test_username_and_password_rules_follow_cognito_limits() -> None:
    assert is_possible_username("a" * 128) and not is_possible_username("a" * 129)
    assert is_possible_password("p" * 256) and not is_possible_password("p" * 257)
    assert is_possible_password("p" * 6) and not is_possible_password("p" * 5)
    assert is_possible_password("a b") is False  # too short, not for its space
    assert is_possible_password("pass word") and not is_possible_password("password ")
    assert not is_possible_username("") and not is_possible_password("")


# --- re-checks: one per-user read (AdminGetUser), not ListUsers --------------------------------


def _operations(provider: CognitoProvider) -> list[str]:
    """The names of the API calls `provider` makes from now on (botocore's own event)."""
    seen: list[str] = []
    provider._client.meta.events.register(  # noqa: SLF001 - the test watches the real client
        "before-call.cognito-idp", lambda model, **_: seen.append(model.name)
    )
    return seen


async def test_lookup_sub_with_the_username_reads_that_one_user(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    sub = cognito.add_user("alice", PASSWORD, email="alice@example.com")
    seen = _operations(provider)

    assert await provider.lookup_sub(sub, "alice") == Identity(sub, "alice", "alice@example.com")
    cognito.disable("alice")
    assert (await provider.lookup_sub(sub, "alice")).enabled is False
    assert seen == ["AdminGetUser", "AdminGetUser"]


async def test_a_username_taken_again_by_another_user_means_the_owner_was_deleted(
    cognito: CognitoPool, provider: CognitoProvider
) -> None:
    old = cognito.add_user("alice", PASSWORD, email="alice@example.com")
    cognito.boto.admin_delete_user(UserPoolId=cognito.pool_id, Username="alice")
    cognito.add_user("alice", PASSWORD, email="alice@example.com")
    with pytest.raises(UnknownUser):
        await provider.lookup_sub(old, "alice")
    with pytest.raises(UnknownUser):
        await provider.lookup_sub(old, "nobody-by-that-name")


async def test_in_an_email_pool_the_username_recorded_at_login_reads_the_user(
    cognito_email: CognitoPool, tmp_path: Path
) -> None:
    sub = cognito_email.add_user("bob@example.com", PASSWORD, email="bob@example.com")
    provider = CognitoProvider(cognito_email.config(tmp_path).cognito)
    seen = _operations(provider)
    try:
        identity = await provider.authenticate("bob@example.com", PASSWORD)
        found = await provider.lookup_sub(sub, identity.username)
    finally:
        await provider.close()
    assert found.sub == sub and found.email == "bob@example.com"
    assert "ListUsers" not in seen and seen[-1] == "AdminGetUser"
