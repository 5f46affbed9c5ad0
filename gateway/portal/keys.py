"""Typed state of the portal sub-application (read through `request.config_dict`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.auth.limiter import FailureLimiter
    from gateway.export.download import Downloads
    from gateway.portal.directory import CognitoDirectory

DIRECTORY: web.AppKey[CognitoDirectory] = web.AppKey("portal_directory")
#: Key of the forms' CSRF tokens (derived from the gateway secret).
FORM_SECRET: web.AppKey[bytes] = web.AppKey("portal_form_secret")
#: Attempts at sign-up, confirm, resend and reset, per address and per email.
LIMITS: web.AppKey[FailureLimiter] = web.AppKey("portal_limits")
#: A line shown on every page (local mode's "no email is sent"), or "".
NOTICE: web.AppKey[str] = web.AppKey("portal_notice")
#: The path the portal's pages sit under: "<server.path_prefix>account/", or "/" on its own host.
BASE: web.AppKey[str] = web.AppKey("portal_base")
#: "Download my data": per-account limits and this process's exports in progress.
DOWNLOADS: web.AppKey[Downloads] = web.AppKey("portal_downloads")
