"""What Cognito's answers mean, and what can never be a Cognito username or password. Pure.

    is_possible_username(u) / is_possible_password(p)   False: refused without a call
    secret_hash(username, client_id, client_secret)      the SECRET_HASH of an app client
    identity_from_id_token(token) / identity_from_user(answer) -> Identity
    classify(code, message, status, lookup=...)          a Cognito error -> the typed failure
    classify_failure(failed, lookup=..., hide=...)       the same for a failed call (aws/calls.py)

The contract (which failure is the user's, AWS's or this gateway's, and why never a 403 for
AWS's trouble) is in cognito.py's docstring; the Cognito facts in docs/cognito.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import unicodedata
from typing import Any

from gateway.aws.calls import CLOSED, REFUSED, UNREACHABLE, AwsCallFailed
from gateway.errors import GatewayError
from gateway.identity.provider import (
    BadCredentials,
    Identity,
    LockedOut,
    ProviderMisconfigured,
    ProviderUnavailable,
    RefusedByOperator,
    UnknownUser,
)

# Cognito's UsernameType is 1-128 characters of [\p{L}\p{M}\p{S}\p{N}\p{P}]; PasswordType is at
# most 256 characters. Anything else can never match a user, so it costs no API call (and no quota).
MAX_USERNAME = 128
MAX_PASSWORD = 256
#: No pool's password policy can ask for fewer (botocore: PasswordPolicyMinLengthType, 6-99), and
#: every way a password is set (SignUp, AdminSetUserPassword, ConfirmForgotPassword,
#: ChangePassword, AdminCreateUser's temporary one) enforces the policy.
MIN_PASSWORD = 6
#: Cognito refuses a password that begins or ends with a space (AWS "Password requirements";
#: PasswordType's pattern [\S]+). Only the characters Java's \s means, so a password Cognito
#: could hold is never refused here.
_EDGE_SPACE = " \t\n\x0b\x0c\r"
_USERNAME_CATEGORIES = frozenset("LMSNP")

LOCKOUT_RETRY_AFTER = 60
UNAVAILABLE_RETRY_AFTER = 5

#: The user's own fault: 403, indistinguishable from a wrong password (docs/cognito.md).
REJECTED = frozenset(
    {
        "NotAuthorizedException",
        "UserNotFoundException",
        "UserNotConfirmedException",
        "PasswordResetRequiredException",
    }
)
#: AWS's trouble, not the user's: 503 with Retry-After. ThrottlingException is the generic code
#: the AWS front door can return for any service.
UNAVAILABLE = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "InternalErrorException",
        "ThrottlingException",
    }
)
_LOCKOUT_MESSAGE = "Password attempts exceeded"
#: Refusals that may mean "no user with this spelling" (a hidden UserNotFoundException is a
#: NotAuthorizedException), so a lower-cased spelling is worth one more try.
_SPELLING_CODES = frozenset({"UserNotFoundException", "NotAuthorizedException"})
#: A sign-in trigger (PreAuthentication, ...) raised: the operator's refusal of this user.
TRIGGER_REFUSED = "UserLambdaValidationException"
#: NotAuthorizedException texts that name a user that exists: another spelling cannot help.
_EXISTING_USER_MESSAGES = ("disabled", "Password attempts exceeded")
#: A Cognito `sub` is a UUID; only such a value is ever put into a ListUsers filter.
_SUB = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: `users_by_email` stops there: more than one is already "ambiguous" to its callers.
MAX_EMAIL_MATCHES = 10


def is_possible_username(username: str) -> bool:
    """False for what Cognito can never hold: empty, too long, control or whitespace characters."""
    return 0 < len(username) <= MAX_USERNAME and all(
        unicodedata.category(ch)[0] in _USERNAME_CATEGORIES for ch in username
    )


def is_possible_password(password: str) -> bool:
    """False for what no Cognito user can have: under 6 or over 256 characters, or white space
    at either end. Such a password is refused without a call, so it costs no quota and never
    counts towards Cognito's lockout of the user it names."""
    return MIN_PASSWORD <= len(password) <= MAX_PASSWORD and password.strip(_EDGE_SPACE) == password


def secret_hash(username: str, client_id: str, client_secret: str) -> str:
    """Cognito's SECRET_HASH, over exactly the USERNAME string sent in the same request."""
    digest = hmac.new(
        client_secret.encode("utf-8"), (username + client_id).encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def identity_from_id_token(id_token: str) -> tuple[Identity, bool]:
    """The Identity in an IdToken's claims, and whether its email is unsettled.

    The email is kept only when the `email_verified` claim is true. The second value is True
    when the token carries an email but no `email_verified` claim at all (moto's tokens), so
    only a lookup can tell whether the email may be used.
    """
    # No signature check: the token is the answer to our own SigV4-signed TLS request to Cognito,
    # so it is exactly as trustworthy as that channel (verifying it would be defence in depth).
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise ProviderMisconfigured("Cognito returned an IdToken that is not a JWT") from None
    if not isinstance(claims, dict):
        raise ProviderMisconfigured("Cognito returned an IdToken without claims")
    sub, username, email = claims.get("sub"), claims.get("cognito:username"), claims.get("email")
    if not isinstance(sub, str) or not sub or not isinstance(username, str) or not username:
        raise ProviderMisconfigured("Cognito IdToken lacks sub or cognito:username")
    if not isinstance(email, str) or not email:
        return Identity(sub=sub, username=username), False
    verified = claims.get("email_verified")
    unsettled = verified is None
    # Cognito sends a JSON boolean; some stand-ins send the attribute's string form.
    email_ok = verified is True or verified == "true"
    return Identity(sub=sub, username=username, email=email if email_ok else None), unsettled


def identity_from_user(response: dict[str, Any]) -> Identity:
    """The Identity in an AdminGetUser answer or one ListUsers entry (`UserAttributes` there,
    `Attributes` here)."""
    listed = response.get("UserAttributes", response.get("Attributes", []))
    attributes = {a.get("Name"): a.get("Value") for a in listed}
    sub, username = attributes.get("sub"), response.get("Username")
    if not sub or not username:
        raise ProviderMisconfigured("Cognito user record lacks sub or Username")
    # RESET_REQUIRED is how an administrator answers a compromised account: no sync either.
    enabled = bool(response.get("Enabled", True)) and response.get("UserStatus") != "RESET_REQUIRED"
    verified = attributes.get("email_verified") == "true"
    email = (attributes.get("email") or None) if verified else None
    return Identity(sub=sub, username=username, email=email, enabled=enabled)


def classify(
    code: str, message: str = "", status: int | None = None, *, lookup: bool = False
) -> GatewayError:
    """The gateway's answer to a Cognito error (docs/cognito.md, "Errors"). Pure.

    `lookup` selects AdminGetUser's meaning: an unknown user is UnknownUser there, and the
    login-only codes are unexpected (so misconfiguration).
    """
    detail = f"Cognito {code or 'error'} (HTTP {status}): {message}"
    if lookup:
        if code == "UserNotFoundException":
            return UnknownUser(f"Cognito {code}")
    elif code == "NotAuthorizedException" and _LOCKOUT_MESSAGE in message:
        return LockedOut(detail, retry_after=LOCKOUT_RETRY_AFTER)
    elif code == TRIGGER_REFUSED:
        return RefusedByOperator(f"Cognito trigger refused the sign-in: {message}")
    elif code in REJECTED:
        # The code only: some stand-ins put the username in the message.
        refused = BadCredentials(f"Cognito {code}")
        refused.other_spelling_may_exist = code in _SPELLING_CODES and not any(
            text in message for text in _EXISTING_USER_MESSAGES
        )
        return refused
    if code in UNAVAILABLE or (status is not None and status >= 500):
        return ProviderUnavailable(detail, retry_after=UNAVAILABLE_RETRY_AFTER)
    misconfigured = ProviderMisconfigured(detail)
    misconfigured.code = code
    return misconfigured


def classify_failure(
    failed: AwsCallFailed, *, lookup: bool = False, hide: tuple[str, ...] = ()
) -> GatewayError:
    """`classify()` for a failed call (aws/calls.py); `hide` are strings scrubbed from any
    echoed message."""
    if failed.kind == REFUSED:
        message = failed.message
        for secret in hide:
            if secret:
                message = message.replace(secret, "[redacted]")
        return classify(failed.code, message, failed.status, lookup=lookup)
    if failed.kind == UNREACHABLE:
        # Refused, reset, DNS, TLS, connect or read timeout, closed mid-answer: after botocore's
        # retries, Cognito (or the way to it) is down. Timeouts are HTTPClientError subclasses.
        return ProviderUnavailable(
            f"Cognito unreachable: {failed.code}", retry_after=UNAVAILABLE_RETRY_AFTER
        )
    if failed.kind == CLOSED:
        return ProviderUnavailable(
            "identity provider is shutting down", retry_after=UNAVAILABLE_RETRY_AFTER
        )
    # NoCredentialsError, NoRegionError, ParamValidationError, ...: this gateway's setup. The
    # class name only: ParamValidationError's text quotes parameter values.
    return ProviderMisconfigured(f"boto3 {failed.code}")


def _error_kind(error: GatewayError) -> str:
    """The metrics label of a failed call (metrics.py)."""
    if isinstance(error, LockedOut):
        return "locked_out"
    if isinstance(error, RefusedByOperator):
        return "trigger_refused"
    if isinstance(error, (BadCredentials, UnknownUser)):
        return "rejected"
    if isinstance(error, ProviderUnavailable):
        return "unavailable"
    return "misconfigured"
