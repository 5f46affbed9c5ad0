"""lambda/cognito_user_provisioner.py, imported as Lambda imports it, posting over real HTTP.

The gateway side is the provisioning route on a loopback port (tests/provision/minimal_app.py)
with moto as Cognito; outages are small stdlib servers that refuse, stall, reset or redirect.
"""

from __future__ import annotations

import copy
import http.server
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.appkeys import REGISTRY
from gateway.config import Secret
from gateway.identity.cognito import CognitoProvider
from gateway.provision import signature
from tests.ports import free_port
from tests.provision.minimal_app import KEY, ProvisionServer

LAMBDA_DIR = Path(__file__).resolve().parents[2] / "lambda"
SIGNING = "signing-secret-" + "z" * 20
PASSWORD = "Correct-Horse-9"
SIGN_UP = "PostConfirmation_ConfirmSignUp"
RESET = "PostConfirmation_ConfirmForgotPassword"


@pytest.fixture
def provisioner(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The handler module as Lambda loads it: the code folder on sys.path, import by name."""
    for name in (
        "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "SYNC_SERVER_URL",
        "SYNC_SERVER_API_KEY", "GATEWAY_PROVISION_URL", "GATEWAY_PROVISION_API_KEY",
        "GATEWAY_PROVISION_SIGNING_SECRET", "GATEWAY_PROVISION_TIMEOUT",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # keep lambda/ a one-file package
    monkeypatch.syspath_prepend(str(LAMBDA_DIR))
    sys.modules.pop("cognito_user_provisioner", None)
    module = importlib.import_module("cognito_user_provisioner")
    yield module
    sys.modules.pop("cognito_user_provisioner", None)


@pytest.fixture
def gateway(tmp_path: Path, cognito: Any) -> Iterator[ProvisionServer]:
    config = cognito.config(tmp_path / "data", provision={"api_keys": (Secret(KEY),)})
    server = ProvisionServer(config, CognitoProvider(config.cognito)).start()
    yield server
    server.stop()


def make_event(username: str, sub: str, email: str | None, trigger: str = SIGN_UP) -> dict:
    attributes = {"sub": sub, "email_verified": "true", "cognito:user_status": "CONFIRMED"}
    if email:
        attributes["email"] = email
    return {
        "version": "1",
        "triggerSource": trigger,
        "region": "eu-west-1",
        "userPoolId": "eu-west-1_Example",
        "userName": username,
        "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": "abc"},
        "request": {"userAttributes": attributes},
        "response": {},
    }


class Context:
    """The part of Lambda's context object the handler uses."""

    def __init__(self, remaining_ms: int = 5000) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "cognito_user_provisioner"
    ]


def run(provisioner: ModuleType, event: Any, context: Any = None) -> tuple[Any, float]:
    started = time.monotonic()
    result = provisioner.lambda_handler(event, context if context is not None else Context())
    return result, time.monotonic() - started


# -- little stand-in servers --------------------------------------------------------------------


class Recorder:
    """An HTTP server that records each request and answers per `behaviour(n)`.

    behaviour returns ("answer", status, body, headers) | ("reset",) | ("stall",).
    """

    def __init__(self, behaviour: Any) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                recorder.requests.append({"path": self.path, "headers": self.headers, "body": body})
                action = behaviour(len(recorder.requests))
                if action[0] == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    return
                if action[0] == "stall":
                    recorder.release.wait(30)
                    return
                _, status, payload, headers = action
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Any]:
    made: list[Recorder] = []

    def make(behaviour: Any) -> Recorder:
        made.append(Recorder(behaviour))
        return made[-1]

    yield make
    for r in made:
        r.close()


def refused_url() -> str:
    port = free_port()  # nobody listens there yet
    return f"http://127.0.0.1:{port}"


OK = ("answer", 200, {"success": True, "username": "x", "created": True}, {})


# -- the module itself -------------------------------------------------------------------------


def test_the_package_is_one_standard_library_file() -> None:
    assert sorted(p.name for p in LAMBDA_DIR.glob("*.py")) == ["cognito_user_provisioner.py"]
    # -S: no site-packages at all, so any third-party import (requests, boto3) fails here.
    code = (
        f"import sys; sys.path.insert(0, {str(LAMBDA_DIR)!r}); "
        "import cognito_user_provisioner as m; print(callable(m.lambda_handler))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://sync.example.com", "https://sync.example.com/provision-user"),
        ("https://sync.example.com/", "https://sync.example.com/provision-user"),
        ("https://example.com/anki", "https://example.com/anki/provision-user"),
        ("https://example.com/anki/", "https://example.com/anki/provision-user"),
        ("https://example.com/provision-user", "https://example.com/provision-user"),
        ("https://example.com/anki/provision-user/", "https://example.com/anki/provision-user"),
    ],
)
def test_provision_url_joins_with_or_without_a_slash(
    provisioner: ModuleType, base: str, expected: str
) -> None:
    assert provisioner.provision_url(base) == expected


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        (SIGNING, 1_700_000_000, b'{"username": "bob"}'),
        ("ünïcode-sécret-1234", 0, b""),
        ("k" * 64, 9_999_999_999, bytes(range(256))),
    ],
)
def test_lambda_and_gateway_sign_identically(
    provisioner: ModuleType, secret: str, timestamp: int, body: bytes
) -> None:
    assert provisioner.sign(secret, timestamp, body) == signature.sign(secret, timestamp, body)
    verifier = signature.Verifier(secret, max_skew=300, clock=lambda: timestamp)
    verifier.verify(str(timestamp), provisioner.sign(secret, timestamp, body), body)


# -- against the gateway -----------------------------------------------------------------------


def test_sign_up_provisions_the_user_on_the_gateway(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    cognito: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = cognito.add_user("newbie", "Passw0rd!x", "newbie@example.com")
    monkeypatch.setenv("SYNC_SERVER_URL", gateway.base)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("newbie", sub, "newbie@example.com")
    before = copy.deepcopy(event)
    with caplog.at_level(logging.INFO):
        result, _ = run(provisioner, event)
    assert result is event and event == before
    account = gateway.registry.get(sub)
    assert account is not None and account.name == "newbie"
    assert gateway.folders() == ["newbie"]
    [line] = lines(caplog)
    assert line | {"ms": 0} == {
        "event": "provisioned",
        "status": 200,
        "account": "newbie",
        "created": True,
        "trigger": SIGN_UP,
        "sub": sub,
        "gateway": gateway.base + "/provision-user",
        "attempts": 1,
        "ms": 0,
    }


def test_a_password_reset_confirmation_is_harmless(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    cognito: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = cognito.add_user("pat", PASSWORD, "pat@example.com")
    monkeypatch.setenv("SYNC_SERVER_URL", gateway.base + "/")
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    with caplog.at_level(logging.INFO):
        run(provisioner, make_event("pat", sub, "pat@example.com", SIGN_UP))
        run(provisioner, make_event("pat", sub, "pat@example.com", RESET))
        run(provisioner, make_event("pat", sub, "pat@example.com", RESET))
    assert [(x["trigger"], x["created"]) for x in lines(caplog)] == [
        (SIGN_UP, True),
        (RESET, False),
        (RESET, False),
    ]
    assert gateway.registry.count() == 1 and gateway.folders() == ["pat"]
    account = gateway.registry.get(sub)
    assert account is not None and account.name == "pat"


def test_a_reset_provisions_a_user_whose_sign_up_the_gateway_missed(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    cognito: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = cognito.add_user("quinn", PASSWORD)
    monkeypatch.setenv("SYNC_SERVER_URL", gateway.base)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    run(provisioner, make_event("quinn", sub, None, RESET))
    account = gateway.registry.get(sub)
    assert account is not None and account.name == "quinn"


@pytest.mark.parametrize("suffix", ["", "/", "/anki", "/anki/", "/anki/provision-user"])
def test_the_url_may_carry_the_gateway_prefix_with_or_without_slash(
    provisioner: ModuleType,
    tmp_path: Path,
    cognito: Any,
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    config = cognito.config(
        tmp_path / "data",
        server={"path_prefix": "/anki/"},
        provision={"api_keys": (Secret(KEY),)},
    )
    server = ProvisionServer(config, CognitoProvider(config.cognito)).start()
    try:
        sub = cognito.add_user("rita", PASSWORD)
        monkeypatch.setenv("SYNC_SERVER_URL", server.base + suffix)
        monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
        run(provisioner, make_event("rita", sub, None))
        account = server.registry.get(sub)
        assert account is not None and account.name == "rita"
    finally:
        server.stop()


def test_gateway_names_win_over_the_old_names(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    cognito: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNC_SERVER_URL", refused_url())
    monkeypatch.setenv("SYNC_SERVER_API_KEY", "old-key-that-is-wrong-now")
    monkeypatch.setenv("GATEWAY_PROVISION_URL", gateway.base)
    monkeypatch.setenv("GATEWAY_PROVISION_API_KEY", KEY)
    sub = cognito.add_user("sam", PASSWORD)
    run(provisioner, make_event("sam", sub, None))
    account = gateway.registry.get(sub)
    assert account is not None and account.name == "sam"


def test_an_event_with_a_sub_cognito_does_not_know_provisions_nothing(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SYNC_SERVER_URL", gateway.base)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("ghost", "0e0e0e0e-1b1b-4c4c-8d8d-9e9e9e9e9e9e", "ghost@example.com")
    with caplog.at_level(logging.INFO):
        result, _ = run(provisioner, event)
    assert result is event
    [line] = lines(caplog)
    assert (line["event"], line["status"], line["error"], line["attempts"]) == (
        "provisioning_failed",
        404,
        "user not found in the identity provider",
        1,
    )
    gateway.assert_untouched()


def test_a_wrong_key_is_logged_without_the_key_and_the_event_returned(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = "wrong-key-" + "q" * 20
    monkeypatch.setenv("SYNC_SERVER_URL", gateway.base)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", wrong)
    event = make_event("tom", "9e9e9e9e-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    with caplog.at_level(logging.DEBUG):
        result, _ = run(provisioner, event)
    assert result is event
    [line] = lines(caplog)
    assert (line["event"], line["status"], line["error"]) == (
        "provisioning_failed",
        401,
        "missing or invalid API key",
    )
    gateway.assert_untouched()
    captured = capsys.readouterr()
    assert wrong not in caplog.text + captured.out + captured.err


def test_signed_requests_are_accepted_by_a_gateway_that_requires_them(
    provisioner: ModuleType, tmp_path: Path, cognito: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = cognito.config(
        tmp_path / "data",
        provision={"api_keys": (Secret(KEY),), "signing_secret": Secret(SIGNING)},
    )
    server = ProvisionServer(config, CognitoProvider(config.cognito)).start()
    try:
        monkeypatch.setenv("SYNC_SERVER_URL", server.base)
        monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
        sub = cognito.add_user("una", PASSWORD)
        run(provisioner, make_event("una", sub, None))
        assert server.registry.count() == 0  # no signing secret in the Lambda: refused
        monkeypatch.setenv("GATEWAY_PROVISION_SIGNING_SECRET", SIGNING)
        run(provisioner, make_event("una", sub, None))
        run(provisioner, make_event("una", sub, None, RESET))  # same second: not a replay
        account = server.registry.get(sub)
        assert account is not None and account.name == "una"
        assert server.registry.count() == 1 and server.folders() == ["una"]
    finally:
        server.stop()


# -- outages: the event always comes back, inside the budget --------------------------------


def test_gateway_down_returns_the_event_fast_after_one_retry(
    provisioner: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SYNC_SERVER_URL", refused_url())
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("vic", "2b2b2b2b-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    with caplog.at_level(logging.INFO):
        result, elapsed = run(provisioner, event)
    assert result is event
    assert elapsed < 1.0, elapsed
    assert [(x["event"], x.get("reason"), x["attempts"]) for x in lines(caplog)] == [
        ("provisioning_retry", "ConnectionRefusedError", 1),
        ("provisioning_failed", "ConnectionRefusedError", 2),
    ]
    print(f"gateway down: handler returned in {elapsed * 1000:.0f} ms")


def test_unresolvable_host_returns_the_event(
    provisioner: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_SERVER_URL", "http://gateway.invalid")
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("wes", "3c3c3c3c-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    result, elapsed = run(provisioner, event)
    assert result is event and elapsed < 3.5


def test_slow_gateway_is_abandoned_after_one_attempt_timeout(
    provisioner: ModuleType,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = recorder(lambda n: ("stall",))
    monkeypatch.setenv("SYNC_SERVER_URL", slow.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("xia", "4d4d4d4d-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    with caplog.at_level(logging.INFO):
        result, elapsed = run(provisioner, event)
    assert result is event
    assert 1.9 < elapsed < 2.5, elapsed  # the default 2 s attempt, no retry after a timeout
    assert len(slow.requests) == 1
    assert [(x["event"], x["reason"]) for x in lines(caplog)] == [
        ("provisioning_failed", "timeout")
    ]
    print(f"gateway slow: handler returned in {elapsed * 1000:.0f} ms")


def test_a_long_configured_timeout_is_capped_by_the_total_budget(
    provisioner: ModuleType, recorder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = recorder(lambda n: ("stall",))
    monkeypatch.setenv("SYNC_SERVER_URL", slow.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    monkeypatch.setenv("GATEWAY_PROVISION_TIMEOUT", "30")
    result, elapsed = run(
        provisioner, make_event("yan", "4d4d4d4d-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    )
    assert result["userName"] == "yan"
    assert 2.9 < elapsed < 3.4, elapsed
    print(f"gateway slow, 30 s configured: handler returned in {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize(("remaining_ms", "limit"), [(1500, 1.2), (400, 0.2)])
def test_the_invocations_remaining_time_bounds_the_attempt(
    provisioner: ModuleType,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    remaining_ms: int,
    limit: float,
) -> None:
    slow = recorder(lambda n: ("stall",))
    monkeypatch.setenv("SYNC_SERVER_URL", slow.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("zed", "5e5e5e5e-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    result, elapsed = run(provisioner, event, Context(remaining_ms))
    assert result is event
    assert elapsed < limit, elapsed
    assert elapsed < remaining_ms / 1000 - 0.3


def test_a_connection_reset_is_retried_once_with_a_fresh_signature(
    provisioner: ModuleType,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = recorder(lambda n: ("reset",) if n == 1 else OK)
    monkeypatch.setenv("SYNC_SERVER_URL", flaky.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    monkeypatch.setenv("GATEWAY_PROVISION_SIGNING_SECRET", SIGNING)
    with caplog.at_level(logging.INFO):
        run(provisioner, make_event("ada", "6f6f6f6f-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None))
    assert len(flaky.requests) == 2
    assert [(x["event"], x["attempts"]) for x in lines(caplog)] == [
        ("provisioning_retry", 1),
        ("provisioned", 2),
    ]
    # Both attempts verify with the gateway's verifier: the retry is not refused as a replay.
    verifier = signature.Verifier(SIGNING, max_skew=300)
    stamps = []
    for request in flaky.requests:
        headers = request["headers"]
        stamps.append(headers["X-Signature-Timestamp"])
        verifier.verify(headers["X-Signature-Timestamp"], headers["X-Signature"], request["body"])
    assert stamps[0] != stamps[1]


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
def test_http_error_answers_are_not_retried(
    provisioner: ModuleType, recorder: Any, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    failing = recorder(lambda n: ("answer", status, {"success": False, "error": "nope"}, {}))
    monkeypatch.setenv("SYNC_SERVER_URL", failing.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    event = make_event("bea", "7a7a7a7a-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    assert run(provisioner, event)[0] is event
    assert len(failing.requests) == 1


def test_redirects_are_not_followed_so_the_key_stays_put(
    provisioner: ModuleType,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = recorder(lambda n: OK)
    redirecting = recorder(
        lambda n: ("answer", 307, {}, {"Location": elsewhere.url + "/provision-user"})
    )
    monkeypatch.setenv("SYNC_SERVER_URL", redirecting.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    with caplog.at_level(logging.INFO):
        run(provisioner, make_event("cy", "8b8b8b8b-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None))
    assert elsewhere.requests == []
    assert [(x["event"], x["status"]) for x in lines(caplog)] == [("provisioning_failed", 307)]


def test_what_is_sent_is_the_shape_the_gateway_reads(
    provisioner: ModuleType, recorder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recorder(lambda n: OK)
    monkeypatch.setenv("SYNC_SERVER_URL", seen.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    sub = "9c9c9c9c-1b1b-4c4c-8d8d-9e9e9e9e9e9e"
    event = make_event("dee", sub, "dee@example.com")
    event["request"]["userAttributes"]["custom:bio"] = "x" * 2000
    event["request"]["userAttributes"]["phone_number"] = "+15555550100"
    run(provisioner, event)
    [request] = seen.requests
    assert request["path"] == "/provision-user"
    assert request["headers"]["X-API-Key"] == KEY
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {
        "username": "dee",
        "email": "dee@example.com",
        "cognito_user_id": sub,
        "user_attributes": {
            "sub": sub,
            "email": "dee@example.com",
            "email_verified": "true",
            "cognito:user_status": "CONFIRMED",
        },
    }


# -- events and settings it must survive -----------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "text",
        {},
        {"triggerSource": "PreSignUp_SignUp", "userName": "x", "request": {"userAttributes": {}}},
        {"triggerSource": "PostAuthentication_Authentication", "userName": "x"},
        {"triggerSource": SIGN_UP},
        {"triggerSource": SIGN_UP, "userName": "x", "request": None},
        {"triggerSource": SIGN_UP, "userName": "x", "request": {"userAttributes": "oops"}},
    ],
    ids=lambda e: json.dumps(e)[:40],
)
def test_odd_events_come_back_unchanged(
    provisioner: ModuleType, recorder: Any, monkeypatch: pytest.MonkeyPatch, event: Any
) -> None:
    seen = recorder(lambda n: ("answer", 400, {"success": False, "error": "bad"}, {}))
    monkeypatch.setenv("SYNC_SERVER_URL", seen.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    before = copy.deepcopy(event)
    result, elapsed = run(provisioner, event)
    assert result is event and event == before and elapsed < 3.0
    if not isinstance(event, dict) or event.get("triggerSource") != SIGN_UP:
        assert seen.requests == []  # only PostConfirmation triggers post anything


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SYNC_SERVER_URL": "https://gateway.example"},
        {"SYNC_SERVER_API_KEY": KEY},
        {"SYNC_SERVER_URL": "file:///etc/passwd", "SYNC_SERVER_API_KEY": KEY},
        {"SYNC_SERVER_URL": "http://[::1", "SYNC_SERVER_API_KEY": KEY},
    ],
    ids=["nothing", "no-key", "no-url", "file-url", "broken-url"],
)
def test_missing_or_bad_settings_are_logged_and_the_event_returned(
    provisioner: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    event = make_event("eve", "1d1d1d1d-1b1b-4c4c-8d8d-9e9e9e9e9e9e", None)
    with caplog.at_level(logging.INFO):
        result, elapsed = run(provisioner, event)
    assert result is event and elapsed < 0.5
    [line] = lines(caplog)
    assert line["event"] in {"not_configured", "provisioning_error"}
    assert KEY not in caplog.text


def test_neither_key_nor_signing_secret_is_ever_logged(
    provisioner: ModuleType,
    gateway: ProvisionServer,
    cognito: Any,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    monkeypatch.setenv("GATEWAY_PROVISION_SIGNING_SECRET", SIGNING)
    sub = cognito.add_user("fay", PASSWORD)
    flaky = recorder(lambda n: ("reset",) if n == 1 else ("answer", 500, {"error": "x"}, {}))
    with caplog.at_level(logging.DEBUG):
        for url in (gateway.base, refused_url(), flaky.url):
            monkeypatch.setenv("SYNC_SERVER_URL", url)
            run(provisioner, make_event("fay", sub, None))
    assert gateway.folders() == ["fay"]  # the gateway's success path logged too
    captured = capsys.readouterr()
    everything = caplog.text + captured.out + captured.err
    assert len(lines(caplog)) >= 4
    for secret in (KEY, SIGNING):
        assert secret not in everything


# -- with the whole gateway and the real Anki client ---------------------------------------


def test_a_user_provisioned_by_the_lambda_syncs_into_the_provisioned_folder(
    provisioner: ModuleType,
    cognito: Any,
    tmp_path: Path,
    start_gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.ankiclient import Client, Required

    sub = cognito.add_user("lena", PASSWORD, "lena@example.com")
    config = cognito.config(
        tmp_path / "data",
        server={"path_prefix": "/anki/"},
        provision={"api_keys": (Secret(KEY),)},
    )
    gw = start_gateway(config)
    # Existing deployments post to the bare host; the gateway also serves /provision-user there.
    monkeypatch.setenv("SYNC_SERVER_URL", f"http://127.0.0.1:{gw.port}")
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    provisioner.lambda_handler(make_event("lena", sub, "lena@example.com"), Context())
    folder = config.collections_dir / "lena"
    assert folder.is_dir() and list(folder.iterdir()) == []

    # The email changes before the first sync: the account (and folder) is keyed on sub.
    cognito.boto.admin_update_user_attributes(
        UserPoolId=cognito.pool_id,
        Username="lena",
        UserAttributes=[{"Name": "email", "Value": "magdalena@example.org"}],
    )
    client = Client(tmp_path / "client")
    try:
        client.add_note("provisioned first")
        client.login("lena", PASSWORD, gw.url)
        assert client.sync() == Required.FULL_UPLOAD
    finally:
        client.close()
    assert (folder / "collection.anki2").is_file()
    assert sorted(p.name for p in config.collections_dir.iterdir()) == ["lena"]
    registry = gw.app[REGISTRY]
    assert gw.call(_count(registry)) == 1
    account = gw.call(_get(registry, sub))
    assert account.name == "lena" and account.email == "magdalena@example.org"


def test_first_logins_racing_20_lambda_invocations_make_one_account(
    provisioner: ModuleType,
    cognito: Any,
    tmp_path: Path,
    start_gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.ankiclient import Client

    sub = cognito.add_user("mia", PASSWORD, "mia@example.com")
    config = cognito.config(tmp_path / "data", provision={"api_keys": (Secret(KEY),)})
    gw = start_gateway(config)
    monkeypatch.setenv("SYNC_SERVER_URL", gw.url)
    monkeypatch.setenv("SYNC_SERVER_API_KEY", KEY)
    clients = [Client(tmp_path / f"client{i}") for i in range(3)]
    start = threading.Barrier(20 + len(clients))
    errors: list[BaseException] = []

    def invoke() -> None:
        start.wait()
        provisioner.lambda_handler(make_event("mia", sub, "mia@example.com"), Context())

    def first_login(client: Any) -> None:
        start.wait()
        try:
            client.login("mia", PASSWORD, gw.url)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=invoke) for _ in range(20)]
    threads += [threading.Thread(target=first_login, args=(c,)) for c in clients]
    with caplog.at_level(logging.INFO, logger="cognito_user_provisioner"):
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    outcomes = [(x["event"], x["account"]) for x in lines(caplog)]
    assert outcomes == [("provisioned", "mia")] * 20
    assert [x["created"] for x in lines(caplog)].count(True) <= 1
    try:
        assert not errors, errors
        clients[0].add_note("after the race")
        clients[0].sync()
    finally:
        for c in clients:
            c.close()
    assert sorted(p.name for p in config.collections_dir.iterdir()) == ["mia"]
    assert (config.collections_dir / "mia" / "collection.anki2").is_file()
    registry = gw.app[REGISTRY]
    assert gw.call(_count(registry)) == 1
    assert gw.call(_get(registry, sub)).name == "mia"


async def _count(registry: Any) -> int:
    return await registry.count()


async def _get(registry: Any, sub: str) -> Any:
    return await registry.get(sub)


def test_run_by_hand_it_provisions_a_user_and_prints_the_answer(
    gateway: ProvisionServer, cognito: Any
) -> None:
    cognito.add_user("hand@example.com", "Passw0rd!x", "hand@example.com")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SYNC_SERVER_URL": gateway.base,
        "SYNC_SERVER_API_KEY": KEY,
    }
    script = str(LAMBDA_DIR / "cognito_user_provisioner.py")
    done = subprocess.run(
        [sys.executable, "-B", script, "--email", "hand@example.com"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome["event"], outcome["status"]) == ("provisioned", 200)
    assert gateway.folders() == ["hand"]
    assert KEY not in done.stdout + done.stderr
    # An unknown email: the gateway's 404, printed, and exit 1.
    done = subprocess.run(
        [sys.executable, "-B", script, "--email", "nobody@example.com"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout.strip().splitlines()[-1])["status"] == 404
