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

from gateway.portal.site import SECURITY_HEADERS, create_portal

__all__ = ["SECURITY_HEADERS", "create_portal"]
