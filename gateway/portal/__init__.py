"""The account portal: server-rendered pages for people, at `<server.path_prefix>account/`, or
at the root of a host name of its own (`portal.host`; app.py mounts it with `add_domain`).

A sub-application of the gateway with its own middlewares, so none of this touches the sync
routes: signed, encrypted cookie sessions (aiohttp-session, Fernet; HttpOnly, SameSite=Lax,
Secure whenever the page was served over HTTPS, expiring after `portal.session_max_age_seconds`),
CSRF tokens on every form (WTForms), autoescaped Jinja2 templates (aiohttp-jinja2), security
headers on every answer (a CSP without inline script or style, no framing, no referrer, no
caching), and an error page instead of any traceback. It calls the gateway's own identity
provider, limiter, registry and worker pool (through `request.config_dict`), never copies.

    create_portal(config, secret, directory=None, base=None) -> web.Application
        base: the path its pages sit under, "<server.path_prefix>account/" (the default: mount
        it with add_subapp there) or "/" (its own host: mount it with add_domain; every other
        path of that host is then the portal's 404, so the host serves nothing else).
    landing.py: the sync host's browser page, pointing at wherever the portal is.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from gateway.appkeys import CONFIG
from gateway.auth.limiter import FailureLimiter
from gateway.config import Config
from gateway.errors import Unavailable
from gateway.export.download import Downloads
from gateway.portal.directory import CognitoDirectory
from gateway.portal.keys import BASE, DIRECTORY, DOWNLOADS, FORM_SECRET, LIMITS, NOTICE
from gateway.portal.views import routes

log = logging.getLogger("gateway.portal")

HERE = Path(__file__).parent
COOKIE = "portal_session"
#: Attempts per address (and per email) within this window: sign-up, confirm, resend, reset.
LIMIT_WINDOW = 900
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

_secure_request: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "portal_secure", default=False
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Storage(EncryptedCookieStorage):
    """Marks the cookie Secure exactly when this request came over HTTPS."""

    def save_cookie(
        self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None
    ) -> None:
        self._cookie_params["secure"] = _secure_request.get()
        super().save_cookie(response, cookie_data, max_age=max_age)


def derive(secret: bytes, purpose: str) -> bytes:
    """32 bytes for `purpose`, derived from the gateway secret (HMAC-SHA256)."""
    return hmac.new(secret, b"portal\0" + purpose.encode(), hashlib.sha256).digest()


def create_portal(
    config: Config,
    secret: bytes,
    directory: CognitoDirectory | None = None,
    base: str | None = None,
) -> web.Application:
    base = base or config.server.path_prefix + "account/"
    portal = web.Application(
        middlewares=[_headers_and_errors(base, config)], client_max_size=16 * 1024
    )
    portal[BASE] = base
    settings = config.portal
    setup_sessions(
        portal,
        _Storage(
            derive(secret, "session"),  # 32 raw bytes; the storage encodes them for Fernet
            cookie_name=COOKIE,
            max_age=settings.session_max_age_seconds,
            httponly=True,
            samesite="Lax",
            # Host-only (no Domain attribute): on its own host the cookie goes to that host alone.
            path=base,
        ),
    )
    aiohttp_jinja2.setup(
        portal,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
    )
    # A junk or expired cookie is routine, and any stranger can send one: not a WARNING.
    logging.getLogger("aiohttp_session").setLevel(logging.ERROR)
    portal[FORM_SECRET] = derive(secret, "forms")
    portal[LIMITS] = FailureLimiter(settings.max_attempts_per_address, LIMIT_WINDOW)
    portal[DOWNLOADS] = Downloads(settings.exports_per_day, settings.max_concurrent_exports)
    from gateway.local.directory import NOTICE as STAND_IN_NOTICE

    portal[NOTICE] = STAND_IN_NOTICE if config.cognito.local_stand_in else ""

    async def directory_lifetime(app: web.Application) -> AsyncIterator[None]:
        if directory is not None:
            chosen = directory
        elif config.cognito.local_stand_in:
            from gateway.local.directory import StandInDirectory

            chosen = StandInDirectory(config.cognito)
        else:
            chosen = CognitoDirectory(config.cognito)
        app[DIRECTORY] = chosen
        yield
        await chosen.close()

    portal.cleanup_ctx.append(directory_lifetime)
    portal.router.add_routes(routes)
    portal.router.add_static("/static/", HERE / "static", append_version=True)
    if base == "/":
        portal.router.add_route("*", "/{tail:.*}", _not_here)
    return portal


async def _not_here(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def _headers_and_errors(home: str, config: Config) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        secure = request.secure
        if config.server.trust_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip()
            secure = secure or forwarded == "https"
        token = _secure_request.set(secure)
        try:
            if request.path == home[:-1]:
                raise web.HTTPSeeOther(home)  # the sub-app also matches the bare prefix
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects: sent as they are, with the headers
                exc.headers.update(SECURITY_HEADERS)
                raise
            response = _error_page(request, exc.status)
        except Unavailable as exc:
            # The registry or another dependency is down: "try again", never a sign-in page.
            log.warning("portal: unavailable", extra={"reason": exc.detail})
            response = _error_page(request, exc.status)
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(exc.retry_after)
        except Exception:
            log.exception("portal: unhandled error")
            response = _error_page(request, 500)
        finally:
            _secure_request.reset(token)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return middleware


def _error_page(request: web.Request, status: int) -> web.Response:
    texts = {
        400: "That request was not understood. Go back and try again.",
        404: "There is no such page.",
        405: "That page does not take this kind of request.",
        413: "That form was too large.",
        503: "The service is busy or briefly unavailable. Please try again in a minute.",
    }
    text = texts.get(status, "Something went wrong on our side. Please try again in a minute.")
    try:
        return aiohttp_jinja2.render_template(
            "error.html",
            request,
            {
                "base": request.config_dict[BASE],
                "service": request.config_dict[CONFIG].portal.service_name,
                "notice": "",
                "text": text,
            },
            status=status,
        )
    except Exception:  # noqa: BLE001 - the error page must never fail
        return web.Response(status=status, text=text)
