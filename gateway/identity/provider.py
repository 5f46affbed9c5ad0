"""The identity-provider boundary.

An identity provider turns a username and password into an `Identity` or raises one of the
typed failures below. The gateway never sees more of the provider than this, so Cognito,
a fake for tests, or a future provider plug in the same way.

    authenticate(username, password) -> Identity
        raises BadCredentials      wrong password, unknown/disabled/unconfirmed user  -> 403
               ImpossibleCredentials  (a BadCredentials) refused without asking the
                                   provider: no user can have them; not charged to the user
               RefusedByOperator   (a BadCredentials) the operator's own hook refused this
                                   sign-in (Cognito PreAuthentication trigger)         -> 403
               ChallengeRequired   the provider wants a step Anki cannot do (MFA, ...) -> 403
               LockedOut           the provider's own lockout for this user            -> 429
               ProviderUnavailable throttled, timed out, 5xx, network                  -> 503
               ProviderMisconfigured  bad pool id, missing permission                  -> 500

    lookup(username) -> Identity          (provisioning without a `sub`)
    lookup_sub(sub, username="") -> Identity   (provisioning with a `sub`; host key re-checks)
        `username`: the provider's username recorded for that sub, when known; a provider may
        read that user (cheaper) and answers UnknownUser when it now belongs to another sub
        raise UnknownUser, ProviderUnavailable, ProviderMisconfigured

`Identity.email` is only ever a *verified* email: an address a user typed into their profile
without confirming it must not name or be stored for an account (anyone could claim
`victim@example.com` that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.errors import AuthFailed, Misconfigured, NotFound, TooManyAttempts, Unavailable


@dataclass(frozen=True)
class Identity:
    sub: str
    """The provider's permanent user id; the only key the gateway uses for accounts."""
    username: str
    """The provider's username (for Cognito: `cognito:username`, often a UUID)."""
    email: str | None = None
    """The user's email when the provider says it is verified (`email_verified`), else None."""
    enabled: bool = True
    """False when the provider says the user may no longer sign in (disabled, reset required).
    Only `lookup` can report False; `authenticate` fails instead."""


class BadCredentials(AuthFailed):
    public = "authentication failed"


class ImpossibleCredentials(BadCredentials):
    """Credentials no user of the provider can have (e.g. a password with a leading space):
    refused without a call, and not counted towards the named user's failure budget, since
    they say nothing about that user's password."""


class RefusedByOperator(BadCredentials):
    """The operator's own code refused this sign-in (Cognito: a PreAuthentication trigger
    raised, `UserLambdaValidationException`); `detail` carries its reason for the log."""


class ChallengeRequired(AuthFailed):
    def __init__(self, challenge: str) -> None:
        super().__init__(f"identity provider requires challenge {challenge}")
        self.challenge = challenge


class LockedOut(TooManyAttempts):
    pass


class UnknownUser(NotFound):
    public = "user not found"


class ProviderUnavailable(Unavailable):
    public = "identity provider unavailable"


class ProviderMisconfigured(Misconfigured):
    #: The provider's error code when it sent one (e.g. Cognito's "ResourceNotFoundException").
    code: str = ""


class IdentityProvider(Protocol):
    async def authenticate(self, username: str, password: str) -> Identity: ...

    async def lookup(self, username: str) -> Identity: ...

    async def lookup_sub(self, sub: str, username: str = "") -> Identity: ...

    async def close(self) -> None: ...
