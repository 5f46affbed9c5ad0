"""The portal sub-application: `create_portal(...)` with its encrypted cookie sessions,
templates, static files and the middleware that sets the security headers (`SECURITY_HEADERS`)
and turns errors into pages. The whole is in the package docstring
(gateway/portal/__init__.py)."""

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
from gateway.config import CognitoConfig, Config
from gateway.errors import Unavailable
from gateway.export.download import Downloads
from gateway.portal import account, views
from gateway.portal.directory import CognitoDirectory
from gateway.portal.keys import BASE, DIRECTORY, DOWNLOADS, FORM_SECRET, LIMITS, NOTICE

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
    *,
    directory_type: Callable[[CognitoConfig], CognitoDirectory] = CognitoDirectory,
    notice: str = "",
) -> web.Application:
    """The portal sub-app (package docstring). Its Cognito calls go through `directory`, or one
    `directory_type` makes at start-up (local mode's stand-in directory, chosen by the app);
    `notice` is shown on every page. The directory is closed on shutdown."""
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
    portal[NOTICE] = notice

    async def directory_lifetime(app: web.Application) -> AsyncIterator[None]:
        chosen = directory if directory is not None else directory_type(config.cognito)
        app[DIRECTORY] = chosen
        yield
        await chosen.close()

    portal.cleanup_ctx.append(directory_lifetime)
    portal.router.add_routes(views.routes)
    portal.router.add_routes(account.routes)
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
