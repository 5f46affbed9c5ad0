"""The portal's pages: one handler per page, each a form in, a page or a redirect out.

    GET  /account/            my account (signed in): last sync, size, media; sign out devices;
                              delete                                   → else redirect to sign-in
    GET  /account/setup       the URL and name to type into Anki, steps per client
    GET/POST signup           email + password (policy checked first) → confirm page
    GET/POST confirm          email + code → account provisioned at once → sign-in page
    POST resend               a new code
    GET/POST signin           email + password (the Anki login's limiter and Cognito check)
    POST signout              ends every portal session of the account
    GET/POST forgot, reset    password reset by emailed code
    POST devices              sign out all Anki devices (a new key generation); ends every
                              other portal session of the account too
    POST export               "Download my data": the account's .colpkg with media, streamed
                              (gateway/export/); only the signed-in owner's own account
    POST delete               password again → workers stopped, folder and registry row gone,
                              the Cognito user deleted/disabled/kept as configured

The sign-up and sign-in pages are here; devices, export and delete (a signed-in person's own
account) are account.py; what every handler uses (forms, pages, redirects, limits, the session)
is handling.py.

Messages are what a person can act on, chosen by code (`MESSAGES`: a link cannot put words on
a page); a refusal never says whether an email has an account (sign-up, confirm, resend and
reset answer alike). Attempt limits (per address and per email, `portal.max_attempts_per_
address` in 15 minutes): "send" actions (sign-up, resend, forgot) count every request, "verify"
actions (confirm, reset) count every request per address but only wrong codes per email, so a
stranger cannot lock a person out of using a right code. Nothing here logs a password, a code or
an email. A session carries the account's portal epoch; signing out, a password reset and
"sign out all devices" move it on, which ends every session of the account (also copied ones).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp_session import get_session, new_session

from gateway.appkeys import CONFIG, LOGIN, PROVIDER, REGISTRY
from gateway.errors import AuthFailed, GatewayError, TooManyAttempts
from gateway.identity.provider import UnknownUser
from gateway.identity.spelling import canonical
from gateway.portal import forms
from gateway.portal.directory import (
    AlreadyConfirmed,
    ExpiredCode,
    PortalError,
    WeakPassword,
    WrongCode,
)
from gateway.portal.handling import (
    DELETE,
    DEVICES,
    EPOCH,
    EXPORT,
    RESEND,
    SIGNED_IN_AT,
    SIGNOUT,
    SUB,
    TOO_MANY,
    address,
    bind,
    count,
    over,
    page,
    redirect,
    server_url,
    signed_in,
)
from gateway.portal.keys import DIRECTORY
from gateway.quota import usage as quota_usage
from gateway.quota.guard import override_of
from gateway.quota.limits import quota_limits
from gateway.quota.usage import limit_text
from gateway.workers.usage import human_bytes, usage

log = logging.getLogger("gateway.portal")
routes = web.RouteTableDef()


def get_and_post(path: str) -> Any:
    """Register a handler for GET and POST only (other methods: 405)."""

    def register(handler: Any) -> Any:
        routes.get(path)(handler)
        routes.post(path)(handler)
        return handler

    return register


# -- pages ------------------------------------------------------------------------------------


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    account = await signed_in(request)
    if account is None:
        raise redirect(request, "signin", request.query.get("m", ""))
    registry = request.config_dict[REGISTRY]
    used = usage(registry.folder(account))
    limits = quota_limits(request.config_dict[CONFIG].quota).with_override(override_of(account))
    synced = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(account.last_seen))
        if account.last_seen > account.created_at
        else "never"
    )
    return page(
        request,
        "account.html",
        account=account,
        login_name=account.email or account.cognito_username,
        last_sync=synced,
        collection_size=human_bytes(used.collection_bytes),
        media_files=used.media_files,
        media_size=human_bytes(used.media_bytes),
        collection_limit=limit_text(limits.collection),
        media_limit=limit_text(limits.media),
        media_file_limit=limit_text(limits.media_file),
        over_quota=quota_usage.over(used, limits),
        devices_form=await bind(request, forms.ConfirmActionForm, prefix=DEVICES),
        signout_form=await bind(request, forms.ConfirmActionForm, prefix=SIGNOUT),
        delete_form=await bind(request, forms.DeleteForm, prefix=DELETE),
        export_form=await bind(request, forms.ConfirmActionForm, prefix=EXPORT),
    )


@routes.get("/setup")
async def setup(request: web.Request) -> web.StreamResponse:
    account = await signed_in(request)
    url = server_url(request)
    return page(
        request,
        "setup.html",
        server_url=url,
        media_url=url + "msync/",
        login_name=(account.email or account.cognito_username) if account else None,
    )


@get_and_post("/signup")
async def signup(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.SignUpForm)
    policy = await request.config_dict[DIRECTORY].password_policy()
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        problems = policy.problems(form.password.data)
        keys = ("send:" + address(request), "send:" + email)
        if problems:
            form.password.errors.append("The password needs " + ", ".join(problems) + ".")
        elif over(request, *keys):
            error = TOO_MANY
        else:
            count(request, *keys)
            try:
                await request.config_dict[DIRECTORY].sign_up(email, form.password.data)
            except WeakPassword as exc:
                form.password.errors.append(exc.message)
            except PortalError as exc:
                error = exc.message
            else:
                log.info("portal: sign-up submitted")
                raise redirect(request, "confirm", "sent", email=email)
    return page(request, "signup.html", form=form, rules=policy.rules(), error=error)


@get_and_post("/confirm")
async def confirm(request: web.Request) -> web.StreamResponse:
    prefill = request.query.get("email", "")
    form = await bind(request, forms.ConfirmForm, email=prefill)
    resend = await bind(request, forms.EmailForm, email=prefill, prefix=RESEND)
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        if over(request, "verify:" + address(request), "verify:" + email):
            error = TOO_MANY
        else:
            count(request, "verify:" + address(request))
            try:
                await request.config_dict[DIRECTORY].confirm(email, form.code.data)
            except ExpiredCode as exc:
                count(request, "verify:" + email)
                await _resend_quietly(request, email)
                error = exc.message
            except WrongCode as exc:
                count(request, "verify:" + email)
                error = exc.message
            except AlreadyConfirmed:
                # The same answer as a confirmation: it must not tell who has an account.
                raise redirect(request, "signin", "confirmed", email=email) from None
            except PortalError as exc:
                error = exc.message
            else:
                name = await _provision(request, email)
                log.info("portal: sign-up confirmed", extra={"account": name})
                raise redirect(request, "signin", "confirmed", email=email)
    return page(request, "confirm.html", form=form, resend=resend, error=error)


@routes.post("/resend")
async def resend(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.EmailForm, prefix=RESEND)
    if not form.validate():
        raise redirect(request, "confirm", "need-email")
    email = form.email.data
    keys = ("send:" + address(request), "send:" + email)
    if over(request, *keys):
        raise redirect(request, "confirm", "too-many", email=email)
    count(request, *keys)
    await _resend_quietly(request, email)
    raise redirect(request, "confirm", "resent", email=email)


@get_and_post("/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.SignInForm, email=request.query.get("email", ""))
    error = ""
    if request.method == "POST" and form.validate():
        try:
            account = await request.config_dict[LOGIN].verify(
                form.email.data, form.password.data, address(request)
            )
        except TooManyAttempts:
            error = TOO_MANY
        except AuthFailed:
            error = "Email or password is not right, or the account is not confirmed yet."
        else:
            # Cognito vouched for the owner just now: the account counts as seen (retention/).
            await request.config_dict[REGISTRY].mark_checked(account.sub)
            session = await new_session(request)  # a fresh session id: no fixation
            session[SUB] = account.sub
            session[EPOCH] = account.portal_epoch
            session[SIGNED_IN_AT] = int(time.time())
            log.info("portal: signed in", extra={"account": account.name})
            raise redirect(request, "")
    return page(request, "signin.html", form=form, error=error)


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.ConfirmActionForm, prefix=SIGNOUT)
    account = await signed_in(request)
    if account is not None and form.validate():
        # Every session of the account, copies of this cookie included.
        await request.config_dict[REGISTRY].end_portal_sessions(account.sub)
    (await get_session(request)).invalidate()  # this browser's at least, token or not
    raise redirect(request, "signin", "signed-out")


@get_and_post("/forgot")
async def forgot(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.EmailForm)
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        keys = ("send:" + address(request), "send:" + email)
        if over(request, *keys):
            error = TOO_MANY
        else:
            count(request, *keys)
            try:
                await request.config_dict[DIRECTORY].forgot(email)
            except PortalError as exc:
                error = exc.message
            else:
                raise redirect(request, "reset", "reset-sent", email=email)
    return page(request, "forgot.html", form=form, error=error)


@get_and_post("/reset")
async def reset(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.ResetForm, email=request.query.get("email", ""))
    policy = await request.config_dict[DIRECTORY].password_policy()
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        problems = policy.problems(form.password.data)
        if problems:
            form.password.errors.append("The password needs " + ", ".join(problems) + ".")
        elif over(request, "verify:" + address(request), "verify:" + email):
            error = TOO_MANY
        else:
            count(request, "verify:" + address(request))
            try:
                await request.config_dict[DIRECTORY].reset(
                    email, form.code.data, form.password.data
                )
            except WeakPassword as exc:
                form.password.errors.append(exc.message)
            except (WrongCode, ExpiredCode) as exc:
                count(request, "verify:" + email)
                error = exc.message
            except PortalError as exc:
                error = exc.message
            else:
                await _after_reset(request, email)
                raise redirect(request, "signin", "reset-done", email=email)
    return page(request, "reset.html", form=form, rules=policy.rules(), error=error)


# -- steps --------------------------------------------------------------------------------------


async def _resend_quietly(request: web.Request, email: str) -> None:
    try:
        await request.config_dict[DIRECTORY].resend(email)
    except PortalError:
        pass


async def _after_reset(request: web.Request, email: str) -> None:
    """A new password: cached Anki logins of the old one go, and every portal session ends."""
    request.config_dict[LOGIN].forget_user(email)
    registry = request.config_dict[REGISTRY]
    for account in await registry.others_named("", {canonical(email)}):
        await registry.end_portal_sessions(account.sub)
    log.info("portal: password reset")


async def _provision(request: web.Request, email: str) -> str | None:
    """Create the gateway account at once (idempotent; the PostConfirmation Lambda may race)."""
    try:
        identity = await request.config_dict[PROVIDER].lookup(email)
    except (UnknownUser, GatewayError) as exc:
        # The first Anki login creates it instead; nothing is lost.
        log.warning("portal: provisioning postponed", extra={"reason": str(exc)})
        return None
    account, _ = await request.config_dict[REGISTRY].ensure(identity, refresh=False)
    return account.name
