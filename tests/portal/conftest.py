"""Portal fixtures: the gateway with the portal on, moto as Cognito, and a code book standing in
for the emails moto never sends (it accepts any confirmation code and has no
ResendConfirmationCode; docs/cognito.md)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.local.directory import StandInDirectory
from gateway.portal.codes import CodeBook
from gateway.portal.directory import ExpiredCode, WrongCode

GOOD_CODE = "246810"
EXPIRED_CODE = "135790"
PORTAL_PASSWORD = "Sync-Pass-2026"


class CodeBookDirectory(StandInDirectory):
    """The real Cognito calls (moto), with Cognito's code checks and email verification on top:
    only GOOD_CODE confirms, EXPIRED_CODE is expired, anything else is wrong; a confirmed email
    is marked verified (as Cognito does); `sent` lists the emails a code was sent to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The stand-in's own code book issues GOOD_CODE, so its check passes where Cognito's would.
        kwargs.setdefault("codes", CodeBook(generate=lambda: GOOD_CODE))
        kwargs.setdefault("announce", lambda purpose, email, code: None)
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def _check(self, code: str) -> None:
        if code == EXPIRED_CODE:
            raise ExpiredCode()
        if code != GOOD_CODE:
            raise WrongCode()

    async def sign_up(self, email: str, password: str) -> None:
        await super().sign_up(email, password)
        self.sent.append(email)

    async def confirm(self, email: str, code: str) -> None:
        self._check(code)
        await super().confirm(email, code)  # the stand-in marks the email verified, as Cognito

    async def resend(self, email: str) -> None:
        await super().resend(email)
        self.sent.append(email)

    async def reset(self, email: str, code: str, new_password: str) -> None:
        self._check(code)
        await super().reset(email, code, new_password)


@pytest.fixture
def portal_pool(mock_cognito: None) -> Any:
    """An email pool with Cognito's default password policy, as the template creates it."""
    from tests.conftest import make_pool

    pool = make_pool(email_as_username=True)
    pool.boto.update_user_pool(
        UserPoolId=pool.pool_id,
        Policies={
            "PasswordPolicy": {
                "MinimumLength": 10,
                "RequireUppercase": True,
                "RequireLowercase": True,
                "RequireNumbers": True,
                "RequireSymbols": False,
            }
        },
    )
    return pool


@pytest.fixture
def portal_gateway(portal_pool: Any, tmp_path: Any, start_gateway: Any) -> Any:
    """`portal_gateway(**sections)` → (RunningGateway, CodeBookDirectory) with the portal on."""

    def start(**sections: Any) -> Any:
        portal = {"enabled": True, **sections.pop("portal", {})}
        config = portal_pool.config(tmp_path / "data", portal=portal, **sections)
        directory = CodeBookDirectory(config.cognito)
        return start_gateway(config, portal_directory=directory), directory

    return start


SYNC_HOST, PORTAL_HOST = "sync.localhost", "signup.localhost"


@pytest.fixture
def two_hosts(portal_pool: Any, tmp_path: Any, start_gateway: Any) -> Any:
    """The gateway with the portal on its own host name: (RunningGateway, CodeBookDirectory,
    sync URL, portal URL). Both names are this one loopback listener (Chromium resolves
    *.localhost to loopback itself; plain HTTP clients send the Host header)."""
    from tests.ports import free_port

    port = free_port()
    sync_url = f"http://{SYNC_HOST}:{port}/"
    portal = {"enabled": True, "host": PORTAL_HOST, "public_url": sync_url}
    config = portal_pool.config(tmp_path / "data", portal=portal)
    directory = CodeBookDirectory(config.cognito)
    gw = start_gateway(config, port=port, portal_directory=directory)
    return gw, directory, sync_url, f"http://{PORTAL_HOST}:{port}/"
