"""The signed-in person's own account actions: sign out all devices, download the data, delete
the account (the page list and the rules are in views.py's docstring).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from gateway import metrics
from gateway.appkeys import CONFIG, LOGIN, POOL, REGISTRY
from gateway.backup.erase import erase_served
from gateway.deletion import Steps, delete_account
from gateway.errors import AuthFailed, TooManyAttempts
from gateway.export import EXPORT_SCRATCH, ExportError
from gateway.export import discard as discard_export
from gateway.export import make as make_export
from gateway.export.download import Ticket, send
from gateway.portal import forms
from gateway.portal.handling import (
    DELETE,
    DEVICES,
    EPOCH,
    EXPORT,
    address,
    bind,
    redirect,
    signed_in,
)
from gateway.portal.keys import DIRECTORY, DOWNLOADS

log = logging.getLogger("gateway.portal")

routes = web.RouteTableDef()


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
        registry.folder(gone)  # ValueError for a name that would leave the collections folder
        await _erase_on_owner(app, gone)
        # This process's sync server at once; another gateway process's, or one starting for
        # a request admitted just before the deletion: stopped by the backup handshake, the
        # folder removed under its lock.
        left = await erase_served(app[POOL], app[CONFIG].collections_dir, gone.name)
        if left is not None:
            log.error(
                "portal: account deleted but its folder is left: remove it by hand",
                extra={"account": gone.name, "reason": left},
            )

    steps = Steps(registry, remove_user, erase, forget=app[LOGIN].forget_account)
    return await delete_account(account, steps)
