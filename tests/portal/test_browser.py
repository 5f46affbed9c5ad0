"""The portal in a real headless browser (Debian's chromium + chromedriver via Selenium), with
the real `anki` client syncing against the real stock server and moto as Cognito.

.ci/run installs chromium and chromium-driver; where they are missing these tests skip, except
under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from anki.errors import SyncError

from tests.ankiclient import Client, Required, is_auth_error
from tests.portal.conftest import EXPIRED_CODE, GOOD_CODE, PORTAL_PASSWORD
from tests.portal.test_pages import post_form
from tests.test_identity_e2e import raw

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless chromium for the module's tests (`browser` gives each a clean one)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver must be installed in CI (.ci/run)")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=390,844",  # a phone's viewport
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Any, tmp_path: Path) -> Any:
    """The module's chromium as a fresh one: no cookies (each test's gateway is another port
    of 127.0.0.1, and cookies ignore ports), no cache, a blank page, and downloads saved to
    the test's own `tmp_path / "downloads"`."""
    for command in ("Network.clearBrowserCookies", "Network.clearBrowserCache"):
        chromium.execute_cdp_cmd(command, {})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chromium.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    chromium.get("about:blank")
    return chromium


def click_and_wait(driver: Any, css: str) -> None:
    """Click `css` and wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    wait = WebDriverWait(driver, 20)

    def gone(_: Any) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or "node does not belong to the document"
            return True
        return False

    wait.until(gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))


def fill(driver: Any, values: dict[str, str], submit: str = "form button[type=submit]") -> None:
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    click_and_wait(driver, submit)


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "main").text


def sign_up_and_confirm(driver: Any, base: str, email: str) -> None:
    driver.get(base + "signup")
    fill(driver, {"email": email, "password": PORTAL_PASSWORD, "password_again": PORTAL_PASSWORD})
    assert driver.current_url.startswith(base + "confirm")
    fill(driver, {"code": GOOD_CODE})


def sign_in(driver: Any, base: str, email: str, password: str = PORTAL_PASSWORD) -> None:
    driver.get(base + "signin")
    fill(driver, {"email": email, "password": password})


def test_a_stranger_goes_from_nothing_to_a_synced_anki_and_back_out(
    portal_gateway: Any, browser: Any, tmp_path: Path
) -> None:
    gw, directory = portal_gateway()
    base = gw.url + "account/"
    registry = gw.registry

    # Sign up (a phone capitalises the first letter), confirm with the emailed code.
    sign_up_and_confirm(browser, base, "Newcomer@Example.com")
    assert directory.sent == ["newcomer@example.com"]
    assert "your account is ready" in page_text(browser)
    account = registry.get_by_name("newcomer")  # provisioned at confirmation
    assert account is not None and account.email == "newcomer@example.com"

    # Sign in; the set-up page names the URL and login to type into Anki.
    sign_in(browser, base, "newcomer@example.com")
    assert browser.current_url == base
    browser.get(base + "setup")
    server_url, login_name = text(browser, "#server-url"), text(browser, "#login-name")
    assert (server_url, login_name) == (gw.url, "newcomer@example.com")
    assert text(browser, "#media-url") == gw.url + "msync/"

    # The real client logs in with exactly those and full-uploads a collection with media.
    device = Client(tmp_path / "device")
    for front in ("one", "two", "three"):
        device.add_note(front)
    device.add_media("photo.jpg", b"\xff\xd8 not really a jpeg" * 500)
    device.login(login_name, PORTAL_PASSWORD, server_url)
    assert device.sync() == Required.FULL_UPLOAD
    old_key = device.auth.hkey

    # The account page shows the sync.
    browser.get(base)
    assert text(browser, "#last-sync") != "never"
    assert text(browser, "#collection-size") != "0 bytes"
    assert text(browser, "#media-files").startswith("1 (")

    # A second browser signed in (e.g. a borrowed computer, or a stolen cookie).
    other = requests.Session()
    signed_in = post_form(
        other, base + "signin", {"email": login_name, "password": PORTAL_PASSWORD}
    )
    assert signed_in.url == base
    # Sign out all devices: the client's next sync is an AUTH error; logging in again works.
    # The other browser's session ends too; this one, which asked, stays signed in.
    click_and_wait(browser, "#sign-out-devices")
    assert "Every Anki device is signed out" in page_text(browser)
    assert other.get(base, timeout=30).url.startswith(base + "signin")
    browser.get(base)
    assert browser.current_url == base
    with pytest.raises(SyncError) as info:
        device.sync()
    assert is_auth_error(info.value)
    device.login(login_name, PORTAL_PASSWORD, server_url)
    device.add_note("four")
    device.sync()
    assert device.auth.hkey != old_key
    new_key = device.auth.hkey

    # Delete: the password again; then the folder, the row and the keys are gone.
    folder = registry.folder(registry.get_by_name("newcomer"))
    assert (folder / "collection.anki2").is_file()
    fill(browser, {"delete-password": PORTAL_PASSWORD}, submit="#delete-account")
    assert "deleted" in page_text(browser)
    assert not folder.exists()
    assert registry.get_by_name("newcomer") is None
    assert raw(gw.url, "sync/meta", new_key, {"v": 11, "cv": "test"}) == 403
    # The Cognito user is deleted too (portal.delete_cognito_user: delete, the default).
    sign_in(browser, base, "newcomer@example.com")
    assert "not right" in page_text(browser)
    device.close()


def test_a_wrong_code_and_an_expired_code_say_what_to_do(portal_gateway: Any, browser: Any) -> None:
    gw, directory = portal_gateway()
    base = gw.url + "account/"
    browser.get(base + "signup")
    fill(
        browser,
        {
            "email": "typo@example.com",
            "password": PORTAL_PASSWORD,
            "password_again": PORTAL_PASSWORD,
        },
    )
    fill(browser, {"code": "111111"})
    assert (
        text(browser, "#error") == "That code is not right. Check the latest email and try again."
    )
    fill(browser, {"code": EXPIRED_CODE})
    assert text(browser, "#error") == "That code has expired — we sent a new one."
    assert directory.sent == ["typo@example.com", "typo@example.com"]
    assert gw.registry.count() == 0  # nothing provisioned by a failed confirmation
    fill(browser, {"code": GOOD_CODE})
    assert "your account is ready" in page_text(browser)


def test_an_expired_session_asks_to_sign_in_again(
    portal_gateway: Any, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A session life no sign-in outlasts, however loaded the machine; then the gateway's clock
    # (it runs in this process) passes it. The browser still holds the cookie and sends it, so
    # the gateway itself must refuse the old session.
    life = 60
    gw, _ = portal_gateway(portal={"session_max_age_seconds": life})
    base = gw.url + "account/"
    sign_up_and_confirm(browser, base, "brief@example.com")
    sign_in(browser, base, "brief@example.com")
    assert browser.current_url == base and "My account" in page_text(browser)
    now = time.time
    monkeypatch.setattr(time, "time", lambda: now() + life + 1)
    browser.get(base)
    assert browser.current_url.startswith(base + "signin")
    assert "Sign in" in page_text(browser)


def test_a_forged_csrf_token_changes_nothing(portal_gateway: Any, browser: Any) -> None:
    gw, _ = portal_gateway()
    base = gw.url + "account/"
    sign_up_and_confirm(browser, base, "target@example.com")
    sign_in(browser, base, "target@example.com")
    browser.execute_script(
        "document.querySelector('#delete-password').closest('form')"
        ".querySelector('[name=delete-csrf_token]').value = 'forged##deadbeef';"
    )
    fill(browser, {"delete-password": PORTAL_PASSWORD}, submit="#delete-account")
    assert "That form had expired" in page_text(browser)
    assert gw.registry.get_by_name("target") is not None


def test_a_reset_with_a_weak_password_shows_the_rules_before_calling_cognito(
    portal_gateway: Any, browser: Any, portal_pool: Any
) -> None:
    gw, directory = portal_gateway()
    base = gw.url + "account/"
    sign_up_and_confirm(browser, base, "forgetful@example.com")
    browser.get(base + "forgot")
    fill(browser, {"email": "forgetful@example.com"})
    assert "we sent it a code" in page_text(browser)
    calls: list[str] = []
    original = directory.reset

    async def counting_reset(*args: Any) -> None:
        calls.append("reset")
        await original(*args)

    directory.reset = counting_reset  # type: ignore[method-assign]
    fill(browser, {"code": GOOD_CODE, "password": "weakpass"})
    errors = text(browser, "#password-errors")
    assert errors == "The password needs at least 10 characters, an upper-case letter, a number."
    assert calls == []
    fill(browser, {"code": GOOD_CODE, "password": "Better-Pass-2027"})
    assert "your password is changed" in page_text(browser)
    assert calls == ["reset"]
    sign_in(browser, base, "forgetful@example.com", "Better-Pass-2027")
    assert browser.current_url == base


def test_download_my_data_saves_a_package_that_anki_imports_whole(
    portal_gateway: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from tests.export.test_export import imported

    gw, _ = portal_gateway()
    base = gw.url + "account/"
    sign_up_and_confirm(browser, base, "keeper@example.com")
    sign_in(browser, base, "keeper@example.com")
    device = Client(tmp_path / "device")
    device.add_note("kept")
    device.add_media("kept.png", b"\x89PNG not really" * 300)
    device.login("keeper@example.com", PORTAL_PASSWORD, gw.url)
    assert device.sync() == Required.FULL_UPLOAD
    fronts = device.note_fronts()
    device.close()

    browser.get(base)
    browser.find_element(By.CSS_SELECTOR, "#download-data").click()
    downloads = tmp_path / "downloads"
    deadline = time.monotonic() + 60
    while not (saved := [p for p in downloads.iterdir() if p.suffix == ".colpkg"]):
        assert time.monotonic() < deadline, list(downloads.iterdir())
        time.sleep(0.2)
    [package] = saved
    assert package.name.startswith("keeper-")
    assert browser.current_url == base  # the page stays; the file arrives as a download
    assert imported(package, tmp_path / "imported") == (
        fronts,
        {"kept.png": b"\x89PNG not really" * 300},
    )


def test_the_account_page_shows_usage_against_the_accounts_limits(
    portal_gateway: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    gw, _ = portal_gateway(quota={"media_megs": 2})
    base = gw.url + "account/"
    sign_up_and_confirm(browser, base, "keeper@example.com")
    sign_in(browser, base, "keeper@example.com")
    assert text(browser, "#collection-size") == "0 bytes of 250.0 MB"
    assert text(browser, "#media-files") == "0 (0 bytes of 2.0 MB)"
    assert text(browser, "#media-file-limit") == "100.0 MB"

    device = Client(tmp_path / "device")
    device.add_media("song.mp3", os.urandom(1_500_000))
    device.login("keeper@example.com", PORTAL_PASSWORD, gw.url)
    device.sync()
    device.close()
    browser.get(base)
    assert text(browser, "#media-files") == "1 (1.5 MB of 2.0 MB)"
    assert text(browser, "#collection-size").endswith(" of 250.0 MB")
    assert not browser.find_elements(By.CSS_SELECTOR, "#over-media, #over-collection")

    # The operator lowers this account's media limit below what it holds.
    registry = gw.registry
    registry.set_quota(registry.get_by_name("keeper").sub, {"quota_media_megs": 1})
    browser.get(base)
    assert text(browser, "#media-files") == "1 (1.5 MB of 1.0 MB)"
    assert "Your media is over this server's limit" in text(browser, "#over-media")
    assert not browser.find_elements(By.CSS_SELECTOR, "#over-collection")


def test_sign_up_on_its_own_host_and_sync_on_the_other(
    two_hosts: Any, browser: Any, tmp_path: Path
) -> None:
    gw, directory, sync_url, portal_url = two_hosts

    # Opening the sync URL in a browser offers both ways on; "Create an account" goes to the
    # portal's host, at its root.
    browser.get(sync_url)
    assert text(browser, "#set-up-anki") == "Set up Anki"
    click_and_wait(browser, "#create-account")
    assert browser.current_url == portal_url + "signup"
    sign_up_and_confirm(browser, portal_url, "two.hosts@example.com")
    assert directory.sent == ["two.hosts@example.com"]
    sign_in(browser, portal_url, "two.hosts@example.com")
    assert browser.current_url == portal_url

    # The session cookie belongs to the portal's host alone, at its root.
    (cookie,) = browser.get_cookies()
    assert (cookie["name"], cookie["domain"], cookie["path"]) == (
        "portal_session",
        "signup.localhost",
        "/",
    )
    browser.get(sync_url)
    assert browser.get_cookies() == []

    # An old link to the sync host's account pages lands on the portal host, still signed in;
    # the set-up page names the sync host.
    browser.get(sync_url + "account/setup")
    assert browser.current_url == portal_url + "setup"
    assert (text(browser, "#server-url"), text(browser, "#login-name")) == (
        sync_url,
        "two.hosts@example.com",
    )

    # The real client logs in and syncs against the sync side of the same listener.
    device = Client(tmp_path / "device")
    device.add_note("front")
    device.login("two.hosts@example.com", PORTAL_PASSWORD, gw.url)
    assert device.sync() == Required.FULL_UPLOAD
    device.close()
