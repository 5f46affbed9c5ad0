"""AWS Cognito as the identity provider: AdminInitiateAuth and AdminGetUser through boto3.

Contract (the interface is in provider.py; the Cognito facts in docs/cognito.md):

- `authenticate` makes one AdminInitiateAuth call (botocore's standard retries aside) and answers
  with an `Identity` keyed on the IdToken's `sub`, or raises one typed failure. A username or
  password that cannot exist in Cognito is refused without a call (ImpossibleCredentials, see
  `is_possible_password` for the rules). A PreAuthentication (or other sign-in) trigger that
  raises gives `UserLambdaValidationException`: the operator refusing this user, so
  RefusedByOperator (403) with the trigger's message logged, never "misconfigured". Pools are
  case-sensitive unless created with `UsernameConfiguration.CaseSensitive=false` (the API default is
  sensitive and cannot change later), while phone keyboards capitalise: when Cognito refuses a
  spelling with capitals (or full-width letters) as unknown, the lower-cased NFKC spelling is
  tried once more. In every pool, so a wrong password typed that way counts twice towards
  Cognito's own lockout.
- The email in an `Identity` is only ever a verified one (`email_verified`): a token or user
  record whose email is unverified gives `email=None`. Cognito puts `email_verified` in every
  IdToken that carries `email`; a token without it (moto's) is settled with one lookup.
- `users_by_email` lists the users with an email (or an email prefix), by ListUsers, for the
  import of folders named after an email (gateway/importer/).
- `lookup_sub(sub, username)` reads the user with AdminGetUser when the username recorded for
  the sub is given (quota category UserRead, 120 calls a second per account and Region by
  default, adjustable), and answers UnknownUser when that username now belongs to another sub
  (the user was deleted and the name taken again: usernames are unique in a pool and never
  change). In a pool that signs in by email the username is the sub itself. Without a
  username it finds the user by `sub` with ListUsers (`Filter='sub = "<sub>"'`, IAM
  `cognito-idp:ListUsers`; quota category UserList: 30 a second, not adjustable).
- Cognito errors map as `classify()` says: the user's fault is BadCredentials (403), Cognito's own
  lockout is LockedOut (429), AWS trouble is ProviderUnavailable (503) and our own setup is
  ProviderMisconfigured (500, logged at ERROR). AWS being down never becomes a 403: the Anki client
  logs the user out on a 403, and only on a 403.
- boto3 blocks, so every call runs in a bounded thread pool sharing one client.
- Nothing here logs a password, a token, the client secret or a SECRET_HASH, at any level. botocore
  prints whole request and response bodies at DEBUG, so those records are dropped (see
  `hold_botocore_wire_logs`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from gateway import metrics
from gateway.aws import client as awsclient
from gateway.config import CognitoConfig, region_of
from gateway.errors import GatewayError
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

log = logging.getLogger(__name__)

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


def classify_exception(
    exc: Exception, *, lookup: bool = False, hide: tuple[str, ...] = ()
) -> GatewayError:
    """`classify()` for a boto3 exception; `hide` are strings scrubbed from any echoed message."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", ""))[:300]
        for secret in hide:
            if secret:
                message = message.replace(secret, "[redacted]")
        return classify(str(error.get("Code", "")), message, status, lookup=lookup)
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        # Refused, reset, DNS, TLS, connect or read timeout, closed mid-answer: after botocore's
        # retries, Cognito (or the way to it) is down. Timeouts are HTTPClientError subclasses.
        return ProviderUnavailable(
            f"Cognito unreachable: {type(exc).__name__}", retry_after=UNAVAILABLE_RETRY_AFTER
        )
    # NoCredentialsError, NoRegionError, ParamValidationError, ...: this gateway's setup. The
    # class name only: ParamValidationError's text quotes parameter values.
    return ProviderMisconfigured(f"boto3 {type(exc).__name__}")


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


def _drop_below_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO


#: botocore loggers whose DEBUG records print request bodies (password, SECRET_HASH) and response
#: bodies (tokens). `logs.configure()` holds all of botocore at WARNING; this also covers any other
#: logging setup (a test's caplog, an operator's DEBUG root logger).
_WIRE_LOGGERS = ("botocore.endpoint", "botocore.parsers")


def hold_botocore_wire_logs() -> None:
    """Drop the DEBUG records of botocore's wire loggers, whatever the level. Idempotent."""
    for name in _WIRE_LOGGERS:
        logger = logging.getLogger(name)
        if _drop_below_info not in logger.filters:
            logger.addFilter(_drop_below_info)


def make_client(config: CognitoConfig) -> Any:
    """The process's one cognito-idp client: creating one takes ~100 ms; threads may share it."""
    # Three tries in all (aws/client.py): 3 x (3 s connect + 5 s read) stays inside the Anki
    # client's 30 s login stall timer, so a hanging Cognito becomes our 503, not a timeout.
    return awsclient.make(
        "cognito-idp",
        region=region_of(config),
        endpoint_url=config.endpoint_url,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_concurrency=config.max_concurrency,
    )


class CognitoProvider:
    """IdentityProvider backed by a Cognito user pool and app client (admin password flow)."""

    def __init__(self, config: CognitoConfig, *, client: Any = None) -> None:
        self._config = config
        self._owns_client = client is None
        self._client = make_client(config) if client is None else client
        self._executor = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix="cognito"
        )
        self._closed = False
        #: Cognito API calls made (refusals without a call are not counted).
        self.calls = 0
        hold_botocore_wire_logs()

    async def authenticate(self, username: str, password: str) -> Identity:
        if not is_possible_username(username) or not is_possible_password(password):
            # Not even the username is logged: people type passwords into it.
            log.info("login refused without calling Cognito: impossible username or password")
            raise ImpossibleCredentials("username or password cannot exist in Cognito")
        try:
            identity, unsettled = await self._initiate_auth(username, password)
        except BadCredentials as exc:
            # Lower case, and compatibility forms folded (full-width letters from a phone's
            # keyboard: Unicode TR15 NFKC), as people sign up.
            plain = unicodedata.normalize("NFKC", username).lower()
            if plain == username or not getattr(exc, "other_spelling_may_exist", False):
                raise
            log.info("Cognito refused a spelling with capitals; trying it in lower case once")
            identity, unsettled = await self._initiate_auth(plain, password)
        if unsettled:
            # Only Cognito's user record can tell whether this email is verified.
            identity = dataclasses.replace(
                identity, email=(await self.lookup_sub(identity.sub, identity.username)).email
            )
        return identity

    async def _initiate_auth(self, username: str, password: str) -> tuple[Identity, bool]:
        params = {"USERNAME": username, "PASSWORD": password}
        secret = self._config.client_secret
        if secret is not None:
            params["SECRET_HASH"] = secret_hash(username, self._config.client_id, secret.reveal())
        response = await self._call(
            "admin_initiate_auth",
            UserPoolId=self._config.user_pool_id,
            ClientId=self._config.client_id,
            AuthFlow=self._config.auth_flow,
            AuthParameters=params,
            hide=(password, params.get("SECRET_HASH", "")),
        )
        challenge = response.get("ChallengeName")
        if challenge:
            # An Anki client cannot answer any challenge: the user must finish signing in on the
            # web. Never cached, since this is a failure.
            log.info("Cognito asks for challenge %s; login refused", challenge)
            raise ChallengeRequired(str(challenge))
        id_token = (response.get("AuthenticationResult") or {}).get("IdToken")
        if not id_token:
            raise self._logged(
                "admin_initiate_auth",
                ProviderMisconfigured("Cognito answered with neither tokens nor a challenge"),
            )
        try:
            return identity_from_id_token(id_token)
        except ProviderMisconfigured as exc:
            raise self._logged("admin_initiate_auth", exc) from None

    async def lookup(self, username: str) -> Identity:
        if not is_possible_username(username):
            raise UnknownUser("username cannot exist in Cognito")
        response = await self._call(
            "admin_get_user", UserPoolId=self._config.user_pool_id, Username=username, lookup=True
        )
        try:
            return identity_from_user(response)
        except ProviderMisconfigured as exc:
            raise self._logged("admin_get_user", exc) from None

    async def lookup_sub(self, sub: str, username: str = "") -> Identity:
        if username and is_possible_username(username):
            identity = await self.lookup(username)
            if identity.sub != sub:
                raise UnknownUser("the username now belongs to another Cognito user")
            return identity
        if not _SUB.fullmatch(sub):
            # Cognito only makes lower-case UUIDs: a stored sub of another shape is this
            # gateway's problem, never a reason to treat the user as deleted.
            raise self._logged(
                "list_users", ProviderMisconfigured("a stored sub is not a Cognito sub (UUID)")
            )
        response = await self._call(
            "list_users",
            UserPoolId=self._config.user_pool_id,
            Filter=f'sub = "{sub}"',
            Limit=1,
            lookup=True,
        )
        users = response.get("Users") or []
        if not users:
            raise UnknownUser("no Cognito user has this sub")
        try:
            identity = identity_from_user(users[0])
        except ProviderMisconfigured as exc:
            raise self._logged("list_users", exc) from None
        if identity.sub != sub:
            raise self._logged(
                "list_users", ProviderMisconfigured("ListUsers answered with another sub")
            )
        return identity

    async def users_by_email(self, email: str, *, prefix: bool = False) -> list[Identity]:
        """Users whose email is `email` (with `prefix`: starts with it), by ListUsers.

        At most `MAX_EMAIL_MATCHES` users. Each `Identity.email` is None unless that email is
        verified, so a caller can tell a verified match from an unverified one. A value Cognito
        cannot hold in a filter (quotes, backslashes, control characters) matches nobody.
        Raises ProviderUnavailable or ProviderMisconfigured.
        """
        if not is_possible_username(email) or '"' in email or "\\" in email:
            return []
        found: list[Identity] = []
        token: str | None = None
        while len(found) < MAX_EMAIL_MATCHES:
            params: dict[str, Any] = {
                "UserPoolId": self._config.user_pool_id,
                "Filter": f'email {"^=" if prefix else "="} "{email}"',
                "Limit": 60,
            }
            if token:
                params["PaginationToken"] = token
            response = await self._call("list_users", lookup=True, **params)
            try:
                found += [identity_from_user(user) for user in response.get("Users") or []]
            except ProviderMisconfigured as exc:
                raise self._logged("list_users", exc) from None
            token = response.get("PaginationToken")
            if not token:
                break
        return found[:MAX_EMAIL_MATCHES]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let calls already queued finish (each bounded by the botocore timeouts), so no thread
        # is still using the client when it closes.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._owns_client:
            self._client.close()

    async def _call(
        self, operation: str, *, lookup: bool = False, hide: tuple[str, ...] = (), **params: Any
    ) -> dict[str, Any]:
        """Run one API call in the thread pool; raise its failure as a logged GatewayError."""
        if self._closed:
            raise ProviderUnavailable(
                "identity provider is shutting down", retry_after=UNAVAILABLE_RETRY_AFTER
            )
        method = functools.partial(getattr(self._client, operation), **params)
        self.calls += 1
        started = time.perf_counter()
        try:
            answer = await asyncio.get_running_loop().run_in_executor(self._executor, method)
        except (ClientError, BotoCoreError) as exc:
            error = classify_exception(exc, lookup=lookup, hide=hide)
            metrics.cognito_call(operation, time.perf_counter() - started, _error_kind(error))
        else:
            metrics.cognito_call(operation, time.perf_counter() - started, None)
            return answer
        # Raised outside the except block on purpose: botocore's exception (and its text) is not
        # chained into tracebacks; `error.detail` carries what is safe to know.
        raise self._logged(operation, error)

    @staticmethod
    def _logged(operation: str, error: GatewayError) -> GatewayError:
        extra = {"operation": operation}
        if isinstance(error, ProviderMisconfigured):
            log.error(
                "COGNITO MISCONFIGURED (check pool id, client id, auth flow, IAM permissions "
                "and AWS credentials): %s",
                error.detail,
                extra=extra,
            )
        elif isinstance(error, (ProviderUnavailable, LockedOut, RefusedByOperator)):
            log.warning("%s", error.detail, extra=extra)
        else:
            log.info("%s", error.detail, extra=extra)
        return error
