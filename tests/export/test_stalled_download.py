"""A download of one's data that the browser stops reading, end to end: the real `anki` client
syncs through the gateway to the stock server, the portal builds the package, and the client
then reads nothing more."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.ankiclient import Client, Required
from tests.export.test_export import export_form
from tests.portal.conftest import PORTAL_PASSWORD
from tests.portal.test_pages import signed_in_session

#: Seconds the client reads nothing.
STALL = 5
#: The gateway's idle timeout (server.body_idle_timeout_seconds) in this test.
IDLE = 2.0


def held_packages() -> list[str]:
    """Removed export packages this process (the gateway runs in it) still holds open."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "export-scratch" in target:
            found.append(target)
    return found


def test_a_download_nobody_reads_lets_its_package_go(portal_gateway: Any, tmp_path: Path) -> None:
    # The answer pace of proxied downloads, with an idle timeout short enough for a test: the
    # client reading nothing for STALL seconds is cut after IDLE, and the package goes with it.
    gw, _ = portal_gateway(server={"body_idle_timeout_seconds": IDLE})
    base = gw.url + "account/"
    owner = signed_in_session(base, "owner@example.com")
    device = Client(tmp_path / "device")
    device.add_note("one")
    device.add_media("noise.bin", os.urandom(8_000_000))  # more than the sockets' buffers
    device.login("owner@example.com", PORTAL_PASSWORD, gw.url)
    assert device.sync() == Required.FULL_UPLOAD
    device.close()
    answer = owner.post(base + "export", data=export_form(owner, base), timeout=120, stream=True)
    try:
        assert answer.status_code == 200
        answer.raw.read(65536)  # the download starts, then the browser reads nothing more
        assert held_packages()  # the package, removed from its folder, is being sent
        time.sleep(STALL)
        assert held_packages() == []
    finally:
        answer.close()
