"""The account portal: server-rendered pages for people, at `<server.path_prefix>account/`.

A sub-application of the gateway with its own middlewares, so none of this touches the sync
routes: signed, encrypted cookie sessions (aiohttp-session, Fernet; HttpOnly, SameSite=Lax,
Secure whenever the page was served over HTTPS, expiring after `portal.session_max_age_seconds`),
CSRF tokens on every form (WTForms), autoescaped Jinja2 templates (aiohttp-jinja2), security
headers on every answer (a CSP without inline script or style, no framing, no referrer, no
caching), and an error page instead of any traceback. It calls the gateway's own identity
provider, limiter, registry and worker pool (through `request.config_dict`), never copies.

    create_portal(config, secret, directory=None) -> web.Application   (add_subapp it)
"""

from gateway.portal.site import SECURITY_HEADERS, create_portal

__all__ = ["SECURITY_HEADERS", "create_portal"]
