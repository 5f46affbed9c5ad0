"""The body of `POST /provision-user`: parsed and validated into a `ProvisionRequest`. Pure.

Accepted shape (what the PostConfirmation Lambdas send; unknown fields are ignored):

    {"username": str, "email": str | null, "cognito_user_id": str | null,
     "user_attributes": {"sub": str, "email": str, ...} | null}

- At least one of `username` and `email` (a manual call may send only those; the gateway then
  looks the user up in Cognito). `user_attributes.email` stands in for a missing `email`.
- `username`: 1-128 characters of Cognito's UsernameType alphabet (letters, marks, symbols,
  numbers, punctuation: no whitespace or control characters), and no path syntax (`/`, `\\`,
  `..`): Cognito never generates those and the earlier system used usernames as folder names.
- `email`: at most 254 characters (RFC 5321), `local@domain`, no whitespace, control characters
  or path syntax. An empty string means "no email" (pools that sign in by phone number).
- `sub`: `user_attributes.sub` if present, which must be a UUID (what Cognito's `sub` is), or
  `cognito_user_id` when that is a UUID; anything else in `cognito_user_id` is ignored (old
  callers sent made-up ids there). Normalised to lowercase, as Cognito writes it.

`parse()` raises `InvalidRequest` (400) naming the first problem; its text is safe to echo.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

MAX_USERNAME = 128  # Cognito UsernameType
MAX_EMAIL = 254  # RFC 5321, section 4.5.3.1.3 (the path limit)
_USERNAME_CATEGORIES = frozenset("LMSNP")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PATH_SYNTAX = ("/", "\\", "..")


class InvalidRequest(ValueError):
    """The body is not a valid provisioning request; the message says why (no secrets in it)."""


@dataclass(frozen=True)
class ProvisionRequest:
    username: str | None
    email: str | None
    #: The Cognito `sub` when the caller sent one; None means "look the user up".
    sub: str | None


def decode(body: bytes) -> Any:
    """The JSON value in `body` (UTF-8, RFC 8259 section 8.1), or InvalidRequest."""
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, big ints
        raise InvalidRequest("body is not valid JSON") from exc


def parse(data: Any) -> ProvisionRequest:
    """Validate a decoded JSON body."""
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    attributes = data.get("user_attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise InvalidRequest("user_attributes: must be an object")

    username = _string(data, "username")
    if username is not None:
        _check_username(username)
    email = _string(data, "email") or _string(attributes, "email", "user_attributes.email")
    if email is not None:
        _check_email(email)
    if username is None and email is None:
        raise InvalidRequest("username or email: one of them is required")

    sub = _string(attributes, "sub", "user_attributes.sub")
    if sub is not None:
        if not is_sub(sub):
            raise InvalidRequest("user_attributes.sub: must be a Cognito sub (a UUID)")
    else:
        user_id = _string(data, "cognito_user_id")
        sub = user_id if user_id is not None and is_sub(user_id) else None
    return ProvisionRequest(username=username, email=email, sub=sub.lower() if sub else None)


def is_sub(value: str) -> bool:
    return value.isascii() and _UUID.fullmatch(value.lower()) is not None


def _string(source: dict[str, Any], key: str, label: str | None = None) -> str | None:
    """`source[key]` as a string; None when absent, null or (for optional text) empty."""
    value = source.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{label or key}: must be a string")
    if value == "" and key == "username":
        raise InvalidRequest("username: must not be empty")
    return value or None


def _check_username(username: str) -> None:
    if len(username) > MAX_USERNAME:
        raise InvalidRequest(f"username: longer than {MAX_USERNAME} characters")
    if not all(unicodedata.category(ch)[0] in _USERNAME_CATEGORIES for ch in username):
        raise InvalidRequest("username: contains whitespace or control characters")
    if any(part in username for part in _PATH_SYNTAX):
        raise InvalidRequest("username: contains path syntax ('/', '\\' or '..')")


def _check_email(email: str) -> None:
    if len(email) > MAX_EMAIL:
        raise InvalidRequest(f"email: longer than {MAX_EMAIL} characters")
    if any(unicodedata.category(ch)[0] in "CZ" for ch in email) or not _EMAIL.fullmatch(email):
        raise InvalidRequest("email: not an address of the form local@domain")
    if any(part in email for part in _PATH_SYNTAX):
        raise InvalidRequest("email: contains path syntax ('/', '\\' or '..')")
