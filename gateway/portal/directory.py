"""The portal's Cognito calls: sign-up, confirmation codes, password reset, deletion.

    sign_up(email, password)                  -> None
    confirm(email, code)                      -> None
    resend(email)                             -> None
    forgot(email)                             -> None   (also for unknown emails: no enumeration)
    reset(email, code, new_password)          -> None
    remove(username, action)                  -> None   (AdminDeleteUser, AdminDisableUser or none)
    password_policy()                         -> PasswordPolicy   (DescribeUserPool, cached)

Each raises one `PortalError` subclass whose `message` a person can act on (never Cognito's own
text), or the identity provider's ProviderUnavailable / ProviderMisconfigured. The public user
API (SignUp, ConfirmSignUp, ResendConfirmationCode, ForgotPassword, ConfirmForgotPassword) needs
no IAM permission; the admin calls need `cognito-idp:AdminDeleteUser`,
`cognito-idp:AdminDisableUser` and `cognito-idp:DescribeUserPool` (README, "IAM policy"). The
calls go through the same app client as Anki logins, with SECRET_HASH when it has a secret.
Like the provider, nothing here logs a password or a code, and botocore's wire logs are held.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.aws.calls import REFUSED, AwsCallFailed, AwsCalls
from gateway.config import CognitoConfig
from gateway.identity.cognito import classify_failure, hold_botocore_wire_logs, make_client
from gateway.identity.cognito import secret_hash as compute_secret_hash
from gateway.identity.provider import ProviderUnavailable
from gateway.portal.policy import PasswordPolicy

log = logging.getLogger("gateway.portal.cognito")

#: Seconds a fetched password policy is reused.
POLICY_TTL = 300.0


class PortalError(Exception):
    """A refusal the person can act on; `message` is safe to show."""

    message = "Something went wrong. Please try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message


class WrongCode(PortalError):
    message = "That code is not right. Check the latest email and try again."


class ExpiredCode(PortalError):
    message = "That code has expired — we sent a new one."


class WeakPassword(PortalError):
    message = "That password does not meet the rules below."


class TooManyAttempts(PortalError):
    message = "Too many attempts. Please wait a few minutes and try again."


class AlreadyConfirmed(PortalError):
    message = "This account is already confirmed — sign in."


class BadEmail(PortalError):
    message = "Enter a valid email address."


_ERRORS: dict[str, type[PortalError]] = {
    "CodeMismatchException": WrongCode,
    "ExpiredCodeException": ExpiredCode,
    "InvalidPasswordException": WeakPassword,
    "LimitExceededException": TooManyAttempts,
    "TooManyFailedAttemptsException": TooManyAttempts,
    "TooManyRequestsException": TooManyAttempts,
}
#: Answers that would tell a stranger whether an email has an account: treated as success.
_HIDDEN = frozenset({"UserNotFoundException", "UsernameExistsException"})


class CognitoDirectory:
    def __init__(self, config: CognitoConfig, *, client: Any = None) -> None:
        self._config = config
        self._owns_client = client is None
        self._client = make_client(config) if client is None else client
        self._aws = AwsCalls(self._client, threads=4, name="portal-cognito")
        self._policy: tuple[float, PasswordPolicy] | None = None
        hold_botocore_wire_logs()

    async def close(self) -> None:
        await self._aws.close()
        if self._owns_client:
            self._client.close()

    # -- the public user API ---------------------------------------------------------------

    async def sign_up(self, email: str, password: str) -> None:
        await self._public(
            "sign_up",
            email,
            Password=password,
            UserAttributes=[{"Name": "email", "Value": email}],
            hide=(password,),
        )

    async def confirm(self, email: str, code: str) -> None:
        await self._public("confirm_sign_up", email, ConfirmationCode=code, hide=(code,))

    async def resend(self, email: str) -> None:
        await self._public("resend_confirmation_code", email)

    async def forgot(self, email: str) -> None:
        await self._public("forgot_password", email)

    async def reset(self, email: str, code: str, new_password: str) -> None:
        await self._public(
            "confirm_forgot_password",
            email,
            ConfirmationCode=code,
            Password=new_password,
            hide=(code, new_password),
        )

    # -- admin calls -----------------------------------------------------------------------

    async def remove(self, username: str, action: str) -> None:
        """Apply `portal.delete_cognito_user` ("delete", "disable" or "keep") to the user."""
        operation = {"delete": "admin_delete_user", "disable": "admin_disable_user"}.get(action)
        if operation is None:
            return
        try:
            await self._run(operation, UserPoolId=self._config.user_pool_id, Username=username)
        except _Refused as refused:
            if refused.code != "UserNotFoundException":  # already gone: nothing to do
                raise ProviderUnavailable(f"Cognito {refused.code}") from None

    async def password_policy(self) -> PasswordPolicy:
        now = time.monotonic()
        if self._policy is not None and now - self._policy[0] < POLICY_TTL:
            return self._policy[1]
        try:
            answer = await self._run("describe_user_pool", UserPoolId=self._config.user_pool_id)
        except _Refused as refused:
            raise ProviderUnavailable(f"Cognito {refused.code}") from None
        policy = PasswordPolicy.from_describe_user_pool(answer)
        self._policy = (now, policy)
        return policy

    # -- plumbing ----------------------------------------------------------------------------

    async def _public(
        self, operation: str, email: str, hide: tuple[str, ...] = (), **params: Any
    ) -> None:
        params["ClientId"] = self._config.client_id
        params["Username"] = email
        secret = self._config.client_secret
        if secret is not None:
            params["SecretHash"] = compute_secret_hash(
                email, self._config.client_id, secret.reveal()
            )
        try:
            await self._run(operation, hide=hide, **params)
        except _Refused as refused:
            hidden = refused.code in _HIDDEN or (
                # Unconfirmed (InvalidParameter) or disabled (NotAuthorized) users: Cognito's
                # answer to a reset would tell a stranger that the address has an account.
                operation == "forgot_password"
                and refused.code in ("InvalidParameterException", "NotAuthorizedException")
            )
            if hidden:
                log.info("portal: %s answered %s (not shown)", operation, refused.code)
                return
            if refused.code == "NotAuthorizedException" and operation == "confirm_sign_up":
                raise AlreadyConfirmed() from None
            if refused.code == "InvalidParameterException":
                raise BadEmail() from None
            error = _ERRORS.get(refused.code)
            if error is None:
                raise ProviderUnavailable(f"Cognito {refused.code}") from None
            raise error() from None

    async def _run(self, operation: str, hide: tuple[str, ...] = (), **params: Any) -> Any:
        try:
            return await self._aws.run(operation, **params)
        except AwsCallFailed as failed:
            if failed.kind == REFUSED and (
                failed.code in _ERRORS or failed.code in _HIDDEN or failed.code in _PERSONAL
            ):
                raise _Refused(failed.code) from None
            error = classify_failure(failed, hide=hide)
        # Outside the except block: the unscrubbed message is not chained into tracebacks.
        log.warning("portal: Cognito %s failed: %s", operation, error.detail)
        raise error


#: Codes that describe the person's request rather than Cognito's health.
_PERSONAL = frozenset({"NotAuthorizedException", "InvalidParameterException"})


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
