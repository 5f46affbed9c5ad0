"""The sync host's page for a person who opens the sync URL in a browser, and where it sends them.

    add_routes(app, config)   on the main application, when the portal is enabled:
        GET <server.path_prefix>             the landing page: "Create an account" and "Set up
                                             Anki", linking to the portal wherever it is
        GET <server.path_prefix>account/...  with `portal.host`: 303 to the same page on the
                                             portal's host (old links and bookmarks)
    portal_url(request, config) -> str       the portal's base URL as this client reaches it:
        "<path_prefix>account/" on this host, or "<scheme>://<portal.host>[:port]/", the port
        being the one this request's Host header names (the two names share one listener)

Only configuration and the request's scheme and port make these URLs: a Host header names no
other host here (no open redirect). The page carries the portal's security headers; with the
portal on another host its style sheet comes from there, which the CSP names.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
from aiohttp import web

from gateway.config import Config
from gateway.portal.views import scheme

_PORT = re.compile(r":(\d{1,5})$")
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"], default=True),
)


def portal_url(request: web.Request, config: Config) -> str:
    if not config.portal.host:
        return config.server.path_prefix + "account/"
    port = _PORT.search(request.host or "")
    return f"{scheme(request)}://{config.portal.host}{':' + port.group(1) if port else ''}/"


def add_routes(app: web.Application, config: Config) -> None:
    from gateway.portal import SECURITY_HEADERS

    prefix = config.server.path_prefix

    async def landing(request: web.Request) -> web.StreamResponse:
        base = portal_url(request, config)
        html = _TEMPLATES.get_template("landing.html").render(
            base=base, service=config.portal.service_name, notice="", message="", error=""
        )
        response = web.Response(text=html, content_type="text/html")
        response.headers.update(SECURITY_HEADERS)
        if config.portal.host:
            origin = base.rstrip("/")
            response.headers["Content-Security-Policy"] = SECURITY_HEADERS[
                "Content-Security-Policy"
            ].replace("style-src 'self'", f"style-src {origin}")
        return response

    async def to_portal_host(request: web.Request) -> web.StreamResponse:
        # The path and query as sent (still percent-encoded): nothing decoded goes into Location.
        path, _, query = request.raw_path.partition("?")
        tail = path[len(prefix + "account") :].lstrip("/")
        moved = web.HTTPSeeOther(
            portal_url(request, config) + tail + ("?" + query if query else "")
        )
        moved.headers.update(SECURITY_HEADERS)
        raise moved

    app.router.add_get(prefix, landing)
    if config.portal.host:
        app.router.add_get(prefix + "account{tail:(/.*)?}", to_portal_host)
