"""Cognito PostConfirmation trigger: provision the confirmed user on the gateway.

Handler: `cognito_user_provisioner.lambda_handler` (the name existing deployments use).
Standard library only: Lambda's Python runtimes have no `requests`, and this file is the whole
deployment package.

Environment (the first name set wins):
    GATEWAY_PROVISION_URL, SYNC_SERVER_URL          gateway base URL, e.g. https://sync.example.com
                                                    or https://example.com/anki/ ("provision-user"
                                                    is appended; a URL already ending in it is kept)
    GATEWAY_PROVISION_API_KEY, SYNC_SERVER_API_KEY  sent as X-API-Key
    GATEWAY_PROVISION_SIGNING_SECRET                optional: also sign each request (HMAC-SHA256;
                                                    see gateway/provision/signature.py)
    GATEWAY_PROVISION_TIMEOUT                       seconds per attempt, default 2

Contract:
- Always returns the event, never raises: Cognito fails the user's confirmation when the trigger
  fails, and the gateway provisions on the first login anyway, so an outage must cost nothing.
- Finishes within TOTAL_BUDGET seconds (and within the invocation's remaining time less a
  margin), far inside the 5 s Cognito waits. One retry, and only on a connection error (refused,
  reset, DNS): a timeout or an HTTP error answer is not retried.
- Both PostConfirmation_ConfirmSignUp and PostConfirmation_ConfirmForgotPassword post the user:
  provisioning is idempotent (keyed on `sub`), and a reset heals a sign-up the gateway missed.
- Logs one JSON object a line; never the API key, the signing secret or the request headers.
- Redirects are not followed (they would carry the key to another address); http(s) only.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

TRIGGERS = ("PostConfirmation_ConfirmSignUp", "PostConfirmation_ConfirmForgotPassword")
PATH = "provision-user"
DEFAULT_ATTEMPT_TIMEOUT = 2.0
TOTAL_BUDGET = 3.0
#: Kept back from the invocation's remaining time, for logging and returning.
SAFETY_MARGIN = 0.5
RETRY_PAUSE = 0.1
#: Attributes forwarded to the gateway: what it uses, not the user's whole profile.
FORWARDED_ATTRIBUTES = ("sub", "email", "email_verified", "cognito:user_status")
MAX_ANSWER_BYTES = 4096

logger = logging.getLogger("cognito_user_provisioner")
logger.setLevel(logging.INFO)


def lambda_handler(event: Any, context: Any = None) -> Any:
    started = time.monotonic()
    try:
        _handle(event, context, started)
    except Exception as exc:  # never fail the sign-up
        _log("provisioning_error", error=type(exc).__name__)
    return event


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """X-Signature: the same format as gateway/provision/signature.py."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def provision_url(base: str) -> str:
    """`base` joined with "provision-user", whether or not it ends in "/" (or already in it)."""
    trimmed = base.rstrip("/")
    return trimmed if trimmed.endswith("/" + PATH) else trimmed + "/" + PATH


def _handle(event: Any, context: Any, started: float) -> None:
    trigger = event.get("triggerSource") if isinstance(event, dict) else None
    if trigger not in TRIGGERS:
        _log("skipped", reason="not a PostConfirmation trigger", trigger=str(trigger)[:80])
        return
    url, api_key = (
        _env("GATEWAY_PROVISION_URL", "SYNC_SERVER_URL"),
        _env("GATEWAY_PROVISION_API_KEY", "SYNC_SERVER_API_KEY"),
    )
    if not url or not api_key:
        _log("not_configured", missing="url" if not url else "api key", trigger=trigger)
        return
    if urlsplit(url).scheme not in ("http", "https"):
        _log("not_configured", problem="the gateway URL must start with https://", trigger=trigger)
        return
    attributes = (event.get("request") or {}).get("userAttributes") or {}
    username = event.get("userName")
    body = json.dumps(
        {
            "username": username,
            "email": attributes.get("email") or None,
            "cognito_user_id": attributes.get("sub"),
            "user_attributes": {k: attributes[k] for k in FORWARDED_ATTRIBUTES if k in attributes},
        }
    ).encode("utf-8")
    target = provision_url(url)
    fields = {"trigger": trigger, "sub": attributes.get("sub"), "gateway": _where(target)}
    deadline = started + _budget(context)
    per_attempt = _float_env("GATEWAY_PROVISION_TIMEOUT", DEFAULT_ATTEMPT_TIMEOUT)
    secret = _env("GATEWAY_PROVISION_SIGNING_SECRET")
    last_timestamp = 0
    for attempt in (1, 2):
        timeout = min(per_attempt, deadline - time.monotonic())
        if timeout <= 0.05:
            _log("provisioning_failed", reason="time budget spent", attempts=attempt - 1, **fields)
            return
        headers = {"Content-Type": "application/json", "X-API-Key": api_key}
        if secret:
            # A fresh timestamp per attempt, strictly increasing: the gateway refuses a signature
            # it has seen, and the first attempt may have reached it before the connection broke.
            last_timestamp = max(int(time.time()), last_timestamp + 1)
            headers["X-Signature-Timestamp"] = str(last_timestamp)
            headers["X-Signature"] = sign(secret, last_timestamp, body)
        outcome = _post(target, body, headers, timeout)
        name, retry = outcome.pop("event"), outcome.pop("retry", False)
        outcome.update(fields, attempts=attempt, ms=round((time.monotonic() - started) * 1000))
        if retry and attempt == 1:
            _log("provisioning_retry", **outcome)
            time.sleep(min(RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
            continue
        _log(name, **outcome)
        return


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    """One attempt; a dict for the log (never the headers), with `retry` on connection errors."""
    # http(s) only: checked in _handle(), and the opener has no other handlers.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            answer = _json(_read(response))
            return {
                "event": "provisioned",
                "status": response.status,
                "account": answer.get("username"),
                "created": answer.get("created"),
            }
    except urllib.error.HTTPError as exc:
        answer = _json(_read(exc))
        error = answer.get("error")
        return {
            "event": "provisioning_failed",
            "status": exc.code,
            "error": str(error)[:200] if error else None,
        }
    except TimeoutError:
        return {"event": "provisioning_failed", "reason": "timeout"}
    except (urllib.error.URLError, ConnectionError) as exc:
        # Refused, reset, DNS: worth one more try. A timeout or a certificate problem is not.
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return {"event": "provisioning_failed", "reason": "timeout"}
        retry = not isinstance(reason, ssl.SSLError)
        return {"event": "provisioning_failed", "reason": type(reason).__name__, "retry": retry}
    except http.client.HTTPException as exc:
        return {"event": "provisioning_failed", "reason": type(exc).__name__}


def _read(response: Any) -> bytes:
    try:
        return response.read(MAX_ANSWER_BYTES)
    except (OSError, http.client.HTTPException):
        return b""


def _opener() -> urllib.request.OpenerDirector:
    """HTTP(S) only, no redirect handler (a 3xx surfaces as an HTTPError), proxies from the env."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER = _opener()


def _budget(context: Any) -> float:
    budget = TOTAL_BUDGET
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        budget = min(budget, remaining() / 1000 - SAFETY_MARGIN)
    return budget


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _env(*names: str) -> str:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return ""


def _float_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def _where(url: str) -> str:
    """The URL without any user:password part, for logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def _log(event: str, **fields: Any) -> None:
    logger.info(json.dumps({"event": event, **fields}, default=str, ensure_ascii=False))


def main(argv: list[str] | None = None) -> int:
    """By hand: send a sample PostConfirmation event for `--email` to the configured gateway
    (the same environment as in Lambda) and print the outcome line. Exit 0 on a 2xx answer."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Send a sample PostConfirmation event to the gateway (a provisioning check)."
    )
    parser.add_argument("--email", required=True, help="a confirmed user's email")
    parser.add_argument("--username", help="the Cognito username (default: the email)")
    parser.add_argument("--sub", help="the user's Cognito sub, if you know it")
    args = parser.parse_args(argv)
    attributes = {"email": args.email, "email_verified": "true"}
    if args.sub:
        attributes["sub"] = args.sub
    event = {
        "version": "1",
        "triggerSource": "PostConfirmation_ConfirmSignUp",
        "userName": args.username or args.email,
        "request": {"userAttributes": attributes},
        "response": {},
    }
    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lambda_handler(event)
    finally:
        logger.removeHandler(handler)
    for line in lines:
        print(line)
    outcome = json.loads(lines[-1]) if lines else {}
    return 0 if outcome.get("event") == "provisioned" else 1


if __name__ == "__main__":
    raise SystemExit(main())
