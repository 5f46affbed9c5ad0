"""What every portal page handler uses: the session keys and form prefixes, the messages a
page can show (`MESSAGES`, chosen by code), binding a form, rendering a page, redirecting with
a message, the attempt limits per address and email, and the signed-in account."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from gateway.appkeys import CONFIG, REGISTRY
from gateway.portal import forms
from gateway.portal.keys import BASE, FORM_SECRET, LIMITS, NOTICE
from gateway.web.middlewares import client_address

log = logging.getLogger("gateway.portal")

#: Session keys.
SUB, EPOCH, SIGNED_IN_AT = "sub", "epoch", "at"
#: Field-name prefixes of the extra forms on a page (ids stay unique).
RESEND, DELETE, DEVICES, SIGNOUT, EXPORT = (
    "resend-",
    "delete-",
    "devices-",
    "signout-",
    "export-",
)
#: Largest form body, in bytes.
MAX_FORM = 16 * 1024

MESSAGES = {
    "sent": "We sent a code to that address if it can take a new account. Enter it below.",
    "resent": "If that address is waiting for a code, we sent a new one.",
    "confirmed": "If that code was right, your account is ready. Sign in to set up Anki.",
    "reset-sent": "If that address has an account, we sent it a code.",
    "reset-done": "If that code was right, your password is changed. Sign in.",
    "signed-out": "You are signed out of the account pages in every browser.",
    "session-ended": "Your session ended. Sign in again.",
    "form-expired": "That form had expired. Please try again.",
    "devices": (
        "Every Anki device is signed out. Each must log in again (Sync, then your email and "
        "password). Other browsers signed in to these pages are signed out too."
    ),
    "wrong-password": "That password is not right; nothing was deleted.",
    "too-many": "Too many attempts. Please wait a few minutes and try again.",
    "deleted": "Your account and all its data are deleted.",
    "try-later": "Nothing was deleted: the service could not finish it now. Try again later.",
    "need-email": "Enter your email to get a new code.",
    "export-limit": "You have downloaded your data as often as allowed today. Try tomorrow.",
    "export-running": "Your download is being prepared already; it starts by itself.",
    "export-busy": "The service is busy (a backup or other downloads). Try again in a minute.",
    "export-nothing": "There is nothing to download yet: sync from Anki first.",
    "export-failed": "The download could not be made now. Try again later.",
}
TOO_MANY = MESSAGES["too-many"]


# -- helpers ----------------------------------------------------------------------------------


def base(request: web.Request) -> str:
    return request.config_dict[BASE]


def scheme(request: web.Request) -> str:
    """http or https as the client sees it (X-Forwarded-Proto when trusted)."""
    if request.config_dict[CONFIG].server.trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip()
        if forwarded in ("http", "https"):
            return forwarded
    return request.scheme


def server_url(request: web.Request) -> str:
    """The URL to type into Anki: configured, else this request's origin and path prefix."""
    config = request.config_dict[CONFIG]
    if config.portal.public_url:
        return config.portal.public_url
    return f"{scheme(request)}://{request.host}{config.server.path_prefix}"


def address(request: web.Request) -> str:
    return client_address(request, request.config_dict[CONFIG].server.trust_forwarded_for)


async def bind(request: web.Request, form_class: type[forms.PortalForm], **data: Any) -> Any:
    session = await get_session(request)
    fields = await _fields(request) if request.method == "POST" else None
    return forms.bind(
        form_class, fields, secret=request.config_dict[FORM_SECRET], session=session, **data
    )


async def _fields(request: web.Request) -> Any:
    """The posted form, or 400/413: a body that is too big, not a form, or not decodable is
    answered without reading further and without logging it (it may hold a password)."""
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
    try:
        return await request.clone(client_max_size=MAX_FORM).post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except Exception:  # noqa: BLE001 - any decoding failure is the client's malformed body
        raise web.HTTPBadRequest() from None


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    config = request.config_dict[CONFIG]
    context.setdefault("message", MESSAGES.get(request.query.get("m", ""), ""))
    return aiohttp_jinja2.render_template(
        template,
        request,
        {
            "base": base(request),
            "service": config.portal.service_name,
            "notice": request.config_dict[NOTICE],
            **context,
        },
        status=status,
    )


def redirect(
    request: web.Request, path: str, message: str = "", email: str = ""
) -> web.HTTPSeeOther:
    """303 to the portal page `path`, with a message code (MESSAGES) and an email to prefill."""
    params = {k: v for k, v in (("email", email), ("m", message)) if v}
    return web.HTTPSeeOther(base(request) + path + ("?" + urlencode(params) if params else ""))


def over(request: web.Request, *keys: str) -> bool:
    limiter = request.config_dict[LIMITS]
    return any(limiter.retry_after(key) is not None for key in keys)


def count(request: web.Request, *keys: str) -> None:
    limiter = request.config_dict[LIMITS]
    for key in keys:
        limiter.record_failure(key)


async def signed_in(request: web.Request) -> Any:
    """The signed-in account, or None (no session, expired, ended, or the account is gone)."""
    session = await get_session(request)
    sub = session.get(SUB)
    if not isinstance(sub, str):
        return None
    account = await request.config_dict[REGISTRY].get(sub)
    if account is None or not account.active or session.get(EPOCH) != account.portal_epoch:
        session.invalidate()
        return None
    return account
