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

import asyncio
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
from gateway.deletion import Steps, delete_account
from gateway.errors import AuthFailed, GatewayError, TooManyAttempts
from gateway.export import EXPORT_SCRATCH, ExportError
from gateway.export import discard as discard_export
from gateway.export import make as make_export
from gateway.export.download import Ticket, send
from gateway.identity.provider import UnknownUser
from gateway.identity.spelling import canonical
from gateway.ops.usage import human_bytes, usage
from gateway.portal import forms
from gateway.portal.directory import (
    AlreadyConfirmed,
    ExpiredCode,
    PortalError,
    WeakPassword,
    WrongCode,
)
from gateway.portal.keys import BASE, DIRECTORY, DOWNLOADS, FORM_SECRET, LIMITS, NOTICE
from gateway.quota import usage as quota_usage
from gateway.quota.guard import override_of
from gateway.quota.limits import quota_limits
from gateway.quota.usage import limit_text
from gateway.web.middlewares import client_address

log = logging.getLogger("gateway.portal")
routes = web.RouteTableDef()

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


async def signed_in_form(
    request: web.Request, form_class: type[forms.PortalForm], prefix: str
) -> tuple[Any, Any]:
    """(account, validated form) for an action of a signed-in person, else a redirect."""
    account = await signed_in(request)
    if account is None:
        raise redirect(request, "signin", "session-ended")
    form = await bind(request, form_class, prefix=prefix)
    if not form.validate():
        raise redirect(request, "", "form-expired")
    return account, form


@routes.post("/devices")
async def sign_out_devices(request: web.Request) -> web.StreamResponse:
    account, _ = await signed_in_form(request, forms.ConfirmActionForm, DEVICES)
    await request.config_dict[LOGIN].sign_out(account.sub)  # ends every portal session too
    now = await request.config_dict[REGISTRY].get(account.sub)
    if now is not None:
        # ... except this browser's, which asked: it carries the new epoch on. Copies of its
        # old cookie keep the old one, so they are ended with the rest.
        (await get_session(request))[EPOCH] = now.portal_epoch
    raise redirect(request, "", "devices")


@routes.post("/export")
async def export(request: web.Request) -> web.StreamResponse:
    # The account is the session's own: nothing in the request names one, so no other name,
    # path or id can be slipped in. POST with the form's CSRF token: no cross-site trigger.
    account, _ = await signed_in_form(request, forms.ConfirmActionForm, EXPORT)
    ticket = request.config_dict[DOWNLOADS].admit(account.sub)
    if not isinstance(ticket, Ticket):
        metrics.export(ticket.reason)
        raise redirect(request, "", "export-" + ticket.reason)
    config = request.config_dict[CONFIG]
    job = asyncio.ensure_future(
        asyncio.to_thread(
            make_export,
            config.collections_dir,
            account.name,
            config.data_dir / EXPORT_SCRATCH,
            min_free=config.server.min_free_disk_megs * 1024 * 1024,
        )
    )
    # The thread cannot be stopped: if the browser goes away meanwhile, the slot is freed and
    # the package removed only once it is done.
    job.add_done_callback(lambda _: ticket.release())
    try:
        package = await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(_discard_unsent)
        raise
    except ExportError as exc:
        log.warning(
            "portal: export not made", extra={"account": account.name, "reason": exc.detail}
        )
        metrics.export(exc.reason)
        reason = {"disk": "busy"}.get(exc.reason, exc.reason)
        raise redirect(request, "", "export-" + reason) from None
    day = time.strftime("%Y-%m-%d", time.gmtime())
    log.info("portal: export sent", extra={"account": account.name})
    metrics.export("sent")
    return await send(request, package, f"{account.name}-{day}.colpkg")


def _discard_unsent(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        discard_export(done.result())


@routes.post("/delete")
async def delete(request: web.Request) -> web.StreamResponse:
    account, form = await signed_in_form(request, forms.DeleteForm, DELETE)
    login_name = account.email or account.cognito_username
    try:
        confirmed = await request.config_dict[LOGIN].verify(
            login_name, form.password.data, address(request)
        )
    except TooManyAttempts:
        raise redirect(request, "", "too-many") from None
    except AuthFailed:
        raise redirect(request, "", "wrong-password") from None
    if confirmed.sub != account.sub:
        raise redirect(request, "", "wrong-password")
    if not await _delete_account(request, account):
        raise redirect(request, "", "try-later")
    (await get_session(request)).invalidate()
    raise redirect(request, "signin", "deleted")


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


async def _erase_on_owner(app: Any, account: Any) -> None:
    """Several nodes: the account's folder may be on its owner node's disk (gateway/cluster/)."""
    from gateway.cluster.internal import CLUSTER

    cluster = app.get(CLUSTER)
    if cluster is None:
        return
    from gateway.cluster.erase import erase_remote

    problem = await erase_remote(cluster, account.sub, account.name)
    if problem is not None:
        log.error(
            "portal: account deleted but its folder is left on its node: remove it by hand",
            extra={"account": account.name, "reason": problem},
        )


async def _delete_account(request: web.Request, account: Any) -> bool:
    """Delete the account (gateway/deletion.py); False (nothing deleted) when Cognito could not
    be told first."""
    app = request.config_dict
    registry = app[REGISTRY]
    action = app[CONFIG].portal.delete_cognito_user

    async def remove_user(username: str) -> None:
        await app[DIRECTORY].remove(username, action)

    async def erase(gone: Any) -> None:
        folder = registry.folder(gone)
        await _erase_on_owner(app, gone)
        await app[POOL].stop(gone.name)
        shutil.rmtree(folder, ignore_errors=True)

    steps = Steps(registry, remove_user, erase, forget=app[LOGIN].forget_account)
    return await delete_account(account, steps)
