"""The client's address behind a reverse proxy: the last X-Forwarded-For entry, the one the
gateway's own proxy added; entries before it come from the client and can be forged."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.web.middlewares import client_address


def request(*forwarded: str):
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    return make_mocked_request("POST", "/sync/meta", headers=headers)


def test_the_last_entry_of_one_header_is_the_proxys():
    assert client_address(request("6.6.6.6, 10.0.0.9"), True) == "10.0.0.9"


def test_a_proxy_that_adds_its_own_header_line_is_the_one_believed():
    # HAProxy's `option forwardfor` adds a line of its own; the client's forged line comes
    # first. RFC 9110 §5.3: several lines are one list, in order.
    assert client_address(request("6.6.6.6", "10.0.0.9"), True) == "10.0.0.9"


def test_without_trust_the_header_is_ignored():
    assert client_address(request("6.6.6.6"), False) != "6.6.6.6"
