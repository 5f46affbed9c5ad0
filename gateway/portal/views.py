"""The portal's pages: one handler per page, each a form in, a page or a redirect out.

    GET  /account/            my account (signed in): last sync, size, media; sign out devices;
                              delete                                   → else redirect to sign-in
    GET  /account/setup       the URL and name to type into Anki, steps per client
    GET/POST signup           email + password (policy checked first) → confirm page
    GET/POST confirm          email + code → account provisioned at once → sign-in page
    POST resend               a new code
    GET/POST signin           email + password (the Anki login's limiter and Cognito check)
    POST signout              ends this browser's session
    GET/POST forgot, reset    password reset by emailed code
    POST devices              sign out all Anki devices (a new key generation)
    POST delete               password again → workers stopped, folder and registry row gone,
                              the Cognito user deleted/disabled/kept as configured

Messages are what a person can act on; a refusal never says whether an email has an account
(sign-up, resend and reset answer alike). Nothing here logs a password, a code or an email.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session

from gateway import metrics
from gateway.appkeys import CONFIG, LOGIN, POOL, PROVIDER, REGISTRY
from gateway.auth.identity import UnknownUser
from gateway.errors import AuthFailed, GatewayError, TooManyAttempts
from gateway.portal import forms
from gateway.portal.directory import ExpiredCode, PortalError, WeakPassword
from gateway.portal.keys import DIRECTORY, FORM_SECRET, LIMITS, NOTICE
from gateway.portal.usage import human_bytes, usage

log = logging.getLogger("gateway.portal")
routes = web.RouteTableDef()

#: Session keys.
SUB, SIGNED_IN_AT = "sub", "at"
#: Field-name prefixes of the second form on a page.
RESEND, DELETE = "resend-", "delete-"


# -- helpers ----------------------------------------------------------------------------------


def base(request: web.Request) -> str:
    return request.config_dict[CONFIG].server.path_prefix + "account/"


def server_url(request: web.Request) -> str:
    """The URL to type into Anki: configured, else this request's origin and path prefix."""
    config = request.config_dict[CONFIG]
    if config.portal.public_url:
        return config.portal.public_url
    scheme = request.scheme
    if config.server.trust_forwarded_for:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[-1].strip()
    return f"{scheme}://{request.host}{config.server.path_prefix}"


def address(request: web.Request) -> str:
    from gateway.app import client_address

    return client_address(request, request.config_dict[CONFIG].server.trust_forwarded_for)


async def bind(request: web.Request, form_class: type[forms.PortalForm], **data: Any) -> Any:
    session = await get_session(request)
    fields = await request.post() if request.method == "POST" else None
    return forms.bind(
        form_class, fields, secret=request.config_dict[FORM_SECRET], session=session, **data
    )


def page(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    config = request.config_dict[CONFIG]
    context.setdefault("message", request.query.get("m", ""))
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
    """303 to the portal page `path`, with a message and an email to prefill."""
    params = {k: v for k, v in (("email", email), ("m", message)) if v}
    return web.HTTPSeeOther(base(request) + path + ("?" + urlencode(params) if params else ""))


def limited(request: web.Request, *keys: str) -> bool:
    """Count one attempt for each key; True when any is over the portal's limit."""
    limiter = request.config_dict[LIMITS]
    over = any(limiter.retry_after(key) is not None for key in keys)
    for key in keys:
        limiter.record_failure(key)
    return over


async def signed_in(request: web.Request) -> Any:
    """The signed-in account, or None (no session, expired, or the account is gone)."""
    session = await get_session(request)
    sub = session.get(SUB)
    if not isinstance(sub, str):
        return None
    account = request.config_dict[REGISTRY].get(sub)
    if account is None or not account.active:
        session.invalidate()
        return None
    return account


# -- pages ------------------------------------------------------------------------------------


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    account = await signed_in(request)
    if account is None:
        raise redirect(request, "signin", request.query.get("m", ""))
    registry = request.config_dict[REGISTRY]
    used = usage(registry.folder(account))
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
        devices_form=await bind(request, forms.ConfirmActionForm),
        delete_form=await bind(request, forms.DeleteForm, prefix=DELETE),
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


@routes.route("*", "/signup")
async def signup(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.SignUpForm)
    policy = await request.config_dict[DIRECTORY].password_policy()
    error = ""
    if request.method == "POST" and form.validate():
        problems = policy.problems(form.password.data)
        if problems:
            form.password.errors.append("The password needs " + ", ".join(problems) + ".")
        elif limited(request, "signup:" + address(request)):
            error = TooManyAttemptsMessage
        else:
            try:
                await request.config_dict[DIRECTORY].sign_up(form.email.data, form.password.data)
            except WeakPassword as exc:
                form.password.errors.append(exc.message)
            except PortalError as exc:
                error = exc.message
            else:
                log.info("portal: sign-up submitted")
                raise redirect(
                    request,
                    "confirm",
                    "We sent a code to that address. Enter it below.",
                    email=form.email.data,
                )
    return page(request, "signup.html", form=form, rules=policy.rules(), error=error)


@routes.route("*", "/confirm")
async def confirm(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.ConfirmForm, email=request.query.get("email", ""))
    resend = await bind(
        request, forms.EmailForm, email=request.query.get("email", ""), prefix=RESEND
    )
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        if limited(request, "confirm:" + address(request), "confirm:" + email):
            error = TooManyAttemptsMessage
        else:
            try:
                await request.config_dict[DIRECTORY].confirm(email, form.code.data)
            except ExpiredCode as exc:
                await _resend_quietly(request, email)
                error = exc.message
            except PortalError as exc:
                error = exc.message
            else:
                name = await _provision(request, email)
                log.info("portal: sign-up confirmed", extra={"account": name})
                raise redirect(request, "signin", "Your account is ready. Sign in to set up Anki.")
    return page(request, "confirm.html", form=form, resend=resend, error=error)


@routes.post("/resend")
async def resend(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.EmailForm, prefix=RESEND)
    if not form.validate():
        raise redirect(request, "confirm", "Enter your email to get a new code.")
    email = form.email.data
    if limited(request, "resend:" + address(request), "resend:" + email):
        raise redirect(request, "confirm", TooManyAttemptsMessage, email=email)
    await _resend_quietly(request, email)
    raise redirect(
        request, "confirm", "If that address is waiting, we sent a new code.", email=email
    )


@routes.route("*", "/signin")
async def signin(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.SignInForm)
    error = ""
    if request.method == "POST" and form.validate():
        try:
            account = await request.config_dict[LOGIN].verify(
                form.email.data, form.password.data, address(request)
            )
        except TooManyAttempts:
            error = TooManyAttemptsMessage
        except AuthFailed:
            error = "Email or password is not right, or the account is not confirmed yet."
        else:
            session = await new_session(request)  # a fresh session id: no fixation
            session[SUB] = account.sub
            session[SIGNED_IN_AT] = int(time.time())
            log.info("portal: signed in", extra={"account": account.name})
            raise redirect(request, "")
    return page(request, "signin.html", form=form, error=error)


@routes.post("/signout")
async def signout(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.ConfirmActionForm)
    if form.validate():
        (await get_session(request)).invalidate()
    raise redirect(request, "signin", "You are signed out of this page.")


@routes.route("*", "/forgot")
async def forgot(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.EmailForm)
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        if limited(request, "reset:" + address(request), "reset:" + email):
            error = TooManyAttemptsMessage
        else:
            try:
                await request.config_dict[DIRECTORY].forgot(email)
            except PortalError as exc:
                error = exc.message
            else:
                raise redirect(
                    request,
                    "reset",
                    "If that address has an account, we sent it a code.",
                    email=email,
                )
    return page(request, "forgot.html", form=form, error=error)


@routes.route("*", "/reset")
async def reset(request: web.Request) -> web.StreamResponse:
    form = await bind(request, forms.ResetForm, email=request.query.get("email", ""))
    policy = await request.config_dict[DIRECTORY].password_policy()
    error = ""
    if request.method == "POST" and form.validate():
        email = form.email.data
        problems = policy.problems(form.password.data)
        if problems:
            form.password.errors.append("The password needs " + ", ".join(problems) + ".")
        elif limited(request, "reset:" + address(request), "reset:" + email):
            error = TooManyAttemptsMessage
        else:
            try:
                await request.config_dict[DIRECTORY].reset(
                    email, form.code.data, form.password.data
                )
            except WeakPassword as exc:
                form.password.errors.append(exc.message)
            except PortalError as exc:
                error = exc.message
            else:
                request.config_dict[LOGIN].forget_user(email)
                log.info("portal: password reset")
                raise redirect(request, "signin", "Your password is changed. Sign in.")
    return page(request, "reset.html", form=form, rules=policy.rules(), error=error)


@routes.post("/devices")
async def sign_out_devices(request: web.Request) -> web.StreamResponse:
    account = await signed_in(request)
    if account is None:
        raise redirect(request, "signin", "Your session ended. Sign in again.")
    form = await bind(request, forms.ConfirmActionForm)
    if not form.validate():
        raise redirect(request, "", "That form had expired. Please try again.")
    await request.config_dict[LOGIN].sign_out(account.sub)
    raise redirect(
        request,
        "",
        "Every Anki device is signed out. Each must log in again (Sync, then your email and "
        "password).",
    )


@routes.post("/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    account = await signed_in(request)
    if account is None:
        raise redirect(request, "signin", "Your session ended. Sign in again.")
    form = await bind(request, forms.DeleteForm, prefix=DELETE)
    if not form.validate():
        raise redirect(request, "", "That form had expired. Please try again.")
    login_name = account.email or account.cognito_username
    try:
        confirmed = await request.config_dict[LOGIN].verify(
            login_name, form.password.data, address(request)
        )
    except TooManyAttempts:
        raise redirect(request, "", TooManyAttemptsMessage) from None
    except AuthFailed:
        raise redirect(request, "", "That password is not right; nothing was deleted.") from None
    if confirmed.sub != account.sub:
        raise redirect(request, "", "That password is not right; nothing was deleted.")
    await _delete_account(request, account)
    (await get_session(request)).invalidate()
    raise redirect(request, "signin", "Your account and all its data are deleted.")


# -- steps --------------------------------------------------------------------------------------


TooManyAttemptsMessage = "Too many attempts. Please wait a few minutes and try again."


async def _resend_quietly(request: web.Request, email: str) -> None:
    try:
        await request.config_dict[DIRECTORY].resend(email)
    except PortalError:
        pass


async def _provision(request: web.Request, email: str) -> str | None:
    """Create the gateway account at once (idempotent; the PostConfirmation Lambda may race)."""
    try:
        identity = await request.config_dict[PROVIDER].lookup(email)
    except (UnknownUser, GatewayError) as exc:
        # The first Anki login creates it instead; nothing is lost.
        log.warning("portal: provisioning postponed", extra={"reason": str(exc)})
        return None
    account, _ = request.config_dict[REGISTRY].ensure(identity, refresh=False)
    return account.name


async def _delete_account(request: web.Request, account: Any) -> None:
    """Keys refused first (registry row gone), then the worker stopped, then the folder removed,
    then the Cognito user handled as configured."""
    app = request.config_dict
    registry = app[REGISTRY]
    folder = registry.folder(account)
    registry.delete(account.sub)
    metrics.revocation("deleted")
    app[LOGIN].forget_account(account.sub)
    await app[POOL].stop(account.name)
    shutil.rmtree(folder, ignore_errors=True)
    action = app[CONFIG].portal.delete_cognito_user
    try:
        await app[DIRECTORY].remove(account.cognito_username, action)
    except GatewayError as exc:
        log.error(
            "portal: account deleted, but the Cognito user was not %sd: do it by hand",
            action,
            extra={"account": account.name, "sub": account.sub, "reason": exc.detail},
        )
    log.info("portal: account deleted", extra={"account": account.name, "sub": account.sub})
