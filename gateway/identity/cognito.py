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

import dataclasses
import logging
import time
import unicodedata
from typing import Any

from gateway import metrics
from gateway.aws import client as awsclient
from gateway.aws.calls import AwsCallFailed, AwsCalls
from gateway.config import CognitoConfig, region_of
from gateway.errors import GatewayError
from gateway.identity.cognito_rules import (
    _SUB,
    MAX_EMAIL_MATCHES,
    UNAVAILABLE_RETRY_AFTER,
    _error_kind,
    classify_failure,
    identity_from_id_token,
    identity_from_user,
    is_possible_password,
    is_possible_username,
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

log = logging.getLogger(__name__)


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
        self._aws = AwsCalls(self._client, threads=config.max_concurrency, name="cognito")
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
        await self._aws.close()
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
        self.calls += 1
        started = time.perf_counter()
        try:
            answer = await self._aws.run(operation, **params)
        except AwsCallFailed as failed:
            error = classify_failure(failed, lookup=lookup, hide=hide)
            metrics.cognito_call(operation, time.perf_counter() - started, _error_kind(error))
        else:
            metrics.cognito_call(operation, time.perf_counter() - started, None)
            return answer
        # Raised outside the except block on purpose: the unscrubbed message is not chained into
        # tracebacks; `error.detail` carries what is safe to know.
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
