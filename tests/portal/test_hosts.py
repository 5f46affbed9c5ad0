"""The portal on a host name of its own (`portal.host`), over plain HTTP with Host headers: the
portal at that host's root and nothing else there, its cookie host-only, the sync host's landing
page and its account/ pages pointing there, sync untouched. The browser walk is in
test_browser.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from gateway import config as cfg
from tests.portal.conftest import PORTAL_HOST, SYNC_HOST
from tests.test_identity_e2e import raw


def at(gw: Any, host: str, path: str, method: str = "GET", **kwargs: Any) -> requests.Response:
    """A request to the gateway's listener, for `host` (the Host header a browser would send)."""
    headers = {"Host": f"{host}:{gw.port}", **kwargs.pop("headers", {})}
    url = f"http://127.0.0.1:{gw.port}/{path}"
    return requests.request(
        method, url, headers=headers, allow_redirects=False, timeout=30, **kwargs
    )


def test_the_portal_is_at_the_root_of_its_own_host(two_hosts: Any) -> None:
    gw, _, sync_url, _ = two_hosts
    home = at(gw, PORTAL_HOST, "")
    assert (home.status_code, home.headers["Location"]) == (303, "/signin")
    signup = at(gw, PORTAL_HOST, "signup")
    assert signup.status_code == 200 and 'name="password_again"' in signup.text
    assert 'href="/static/portal.css' in signup.text and 'href="/setup"' in signup.text
    assert at(gw, PORTAL_HOST, "static/portal.css").status_code == 200
    setup = at(gw, PORTAL_HOST, "setup")
    assert f'<code id="server-url">{sync_url}</code>' in setup.text
    # The host matches whatever the case, as DNS names do.
    assert at(gw, PORTAL_HOST.upper(), "signup").status_code == 200


def test_the_portal_host_serves_nothing_but_the_portal(two_hosts: Any) -> None:
    gw, *_ = two_hosts
    for method, path in (
        ("POST", "sync/hostKey"),
        ("POST", "msync/begin"),
        ("POST", "provision-user"),
        ("GET", "account/"),
        ("GET", "account/signup"),
    ):
        answer = at(gw, PORTAL_HOST, path, method)
        assert answer.status_code == 404, (method, path)
        assert answer.headers["X-Frame-Options"] == "DENY"  # the portal's own 404 page


def test_the_portal_cookie_is_host_only_and_at_the_root(two_hosts: Any) -> None:
    gw, *_ = two_hosts
    cookie = at(gw, PORTAL_HOST, "signup").headers["Set-Cookie"]
    assert cookie.startswith("portal_session=")
    attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
    assert attributes["path"].strip() == "Path=/"
    assert "domain" not in attributes  # host-only: never sent to the sync host
    assert "httponly" in attributes and attributes["samesite"].strip() == "SameSite=Lax"


def test_the_sync_hosts_browser_page_offers_both_ways_on(two_hosts: Any) -> None:
    gw, _, _, portal_url = two_hosts
    page = at(gw, SYNC_HOST, "")
    assert page.status_code == 200
    links = dict(re.findall(r'<a id="([a-z-]+)" href="([^"]+)"', page.text))
    assert links == {"create-account": portal_url + "signup", "set-up-anki": portal_url + "setup"}
    csp = page.headers["Content-Security-Policy"]
    assert f"style-src {portal_url.rstrip('/')};" in csp and "default-src 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert 'href="http://' in page.text
    assert "portal.css" in page.text


def test_the_sync_hosts_account_pages_send_people_to_the_portal_host(two_hosts: Any) -> None:
    gw, _, _, portal_url = two_hosts
    for path, target in (
        ("account", ""),
        ("account/", ""),
        ("account/setup", "setup"),
        ("account/signin?email=a%40b.c", "signin?email=a@b.c"),
        ("account//evil.example/x", "evil.example/x"),
        ("account/a%20b", "a%20b"),
    ):
        answer = at(gw, SYNC_HOST, path)
        assert (answer.status_code, answer.headers["Location"]) == (303, portal_url + target)
    # Encoded line breaks never reach a header.
    injected = at(gw, SYNC_HOST, "account/a%0d%0aSet-Cookie:%20x=1")
    assert injected.status_code == 404 and "x" not in injected.cookies
    # A forged Host header changes the port shown, never the host sent to.
    forged = at(gw, SYNC_HOST, "account/", headers={"Host": "evil.example:1"})
    assert forged.headers["Location"] == f"http://{PORTAL_HOST}:1/"


def test_sync_stays_on_the_sync_host(two_hosts: Any) -> None:
    gw, *_ = two_hosts
    # A real login route (a wrong key is the stock 403), not the portal's 404.
    assert raw(gw.url, "sync/meta", "not-a-key", {"v": 11, "cv": "test"}) == 403
    assert at(gw, SYNC_HOST, "health").status_code == 200


@pytest.mark.parametrize(
    ("portal", "problem"),
    [
        ({"host": "signup.example.com"}, "needs portal.public_url"),
        ({"host": "https://signup.example.com"}, "a host name without scheme or port"),
        ({"host": "signup.example.com:8443"}, "a host name without scheme or port"),
        ({"host": "signup.example.com\n"}, "a host name without scheme or port"),
        ({"host": "sync.example.com", "public_url": "https://SYNC.example.com/"}, "must differ"),
        ({"host": "signup.example.com", "enabled": "false"}, "needs portal.enabled"),
    ],
)
def test_portal_host_settings_that_cannot_work_are_refused(
    portal: dict[str, str], problem: str
) -> None:
    env = {
        "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Test1",
        "GATEWAY_COGNITO_CLIENT_ID": "client",
        "GATEWAY_PORTAL_ENABLED": "true",
        "GATEWAY_PORTAL_PUBLIC_URL": "https://sync.example.com/",
        **{f"GATEWAY_PORTAL_{k.upper()}": v for k, v in portal.items()},
    }
    if "public_url" not in portal and problem == "needs portal.public_url":
        del env["GATEWAY_PORTAL_PUBLIC_URL"]
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(None, env)
    assert (
        [p for p in info.value.problems if p.startswith("portal.host:")]
        == [p for p in info.value.problems if problem in p]
        != []
    )


def test_a_portal_host_with_the_sync_url_is_accepted() -> None:
    config = cfg.load(
        None,
        {
            "GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Test1",
            "GATEWAY_COGNITO_CLIENT_ID": "client",
            "GATEWAY_PORTAL_ENABLED": "true",
            "GATEWAY_PORTAL_HOST": "signup.example.com",
            "GATEWAY_PORTAL_PUBLIC_URL": "https://sync.example.com/",
        },
    )
    assert config.portal.host == "signup.example.com"
