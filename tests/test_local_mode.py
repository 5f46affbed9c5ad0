"""Local mode (`python -m gateway dev`): one command, no AWS, everything else the real product.

The end-to-end test starts local mode as a subprocess exactly as README.md says, reads the box
it prints, and syncs with the real `anki` client; the other tests pin the pieces (the stand-in's
stable identities, the configuration it builds, the users file, the box).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.__main__ import main as gateway_main
from gateway.identity.provider import BadCredentials
from gateway.local import mode as local
from gateway.local import standin
from tests.ankiclient import Client, Required
from tests.conftest import live_worker_pids
from tests.portal.conftest import PORTAL_PASSWORD
from tests.portal.test_pages import csrf, post_form, sign_up
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


# -- the stand-in ---------------------------------------------------------------------------


def reset(url: str) -> None:
    """Forget every user and pool: moto's state is per process, shared by its servers."""
    import urllib.request

    request = urllib.request.Request(url + "/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback


@pytest.fixture
def moto_url() -> Iterator[str]:
    with standin.in_process_stand_in(0) as url:
        reset(url)
        yield url
        reset(url)


def test_moto_ignores_a_sub_given_at_creation_so_seeds_are_needed(moto_url):
    # Pins the moto behaviour the seed scheme exists for (gateway/local/standin.py).
    boto = standin.cognito_client(moto_url)
    pool_id, _ = standin.ensure_pool(boto)
    wanted = "11111111-2222-4333-8444-555555555555"
    created = boto.admin_create_user(
        UserPoolId=pool_id,
        Username="x@example.com",
        UserAttributes=[{"Name": "sub", "Value": wanted}],
        MessageAction="SUPPRESS",
    )
    assert standin._sub_of(created["User"]["Attributes"]) != wanted


def test_a_user_gets_the_same_sub_from_a_fresh_stand_in():
    user = standin.new_user("demo@example.com", "password-1")
    subs = []
    for _ in range(2):  # two stand-ins: moto forgot everything in between
        with standin.in_process_stand_in(0) as url:
            reset(url)
            standin.bootstrap(url, [user])
            subs.append(user.sub)
            reset(url)
    assert subs[0] == subs[1] == standin.expected_sub(user.seed)


def test_bootstrap_twice_on_one_stand_in_reuses_pool_client_and_users(moto_url):
    users = [standin.new_user("a@example.com"), standin.new_user("b@example.com")]
    first = standin.bootstrap(moto_url, users)
    subs = [u.sub for u in users]
    second = standin.bootstrap(moto_url, users)
    assert first[:2] == second[:2]
    assert [u.sub for u in users] == subs
    assert second[2] == []  # no warnings
    boto = standin.cognito_client(moto_url)
    assert len(boto.list_users(UserPoolId=first[0])["Users"]) == 2


def test_the_stand_in_logs_users_in_through_the_admin_password_flow(moto_url):
    user = standin.new_user("demo@example.com")
    pool_id, client_id, _ = standin.bootstrap(moto_url, [user])
    answer = standin.cognito_client(moto_url).admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": user.email, "PASSWORD": user.password},
    )
    assert "IdToken" in answer["AuthenticationResult"]


def test_a_sub_that_cannot_be_reproduced_is_reported(moto_url):
    user = standin.new_user("demo@example.com")
    user.sub = "00000000-0000-4000-8000-000000000000"  # e.g. made by an older moto
    _, _, warnings = standin.bootstrap(moto_url, [user])
    assert len(warnings) == 1 and "new, empty account" in warnings[0]
    assert user.sub == standin.expected_sub(user.seed)


def test_dummy_credentials_replace_real_ones():
    environ = {"AWS_PROFILE": "prod", "AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_SESSION_TOKEN": "t"}
    standin.use_dummy_aws_credentials(environ)
    assert environ["AWS_ACCESS_KEY_ID"] == "local-stand-in"
    assert "AWS_PROFILE" not in environ and "AWS_SESSION_TOKEN" not in environ


# -- the users file, the configuration, the box ------------------------------------------------


def test_users_file_round_trips_and_is_private(tmp_path):
    users = [standin.new_user("demo@example.com"), standin.new_user("b@example.com", "pw-123456")]
    standin.save_users(tmp_path, users)
    assert standin.load_users(tmp_path) == users
    assert stat.S_IMODE((tmp_path / standin.USERS_FILE).stat().st_mode) == 0o600


def test_a_broken_users_file_is_explained(tmp_path):
    (tmp_path / standin.USERS_FILE).write_text("{not json")
    with pytest.raises(standin.LocalModeError, match="fix or delete it"):
        standin.load_users(tmp_path)


def test_generated_passwords_meet_cognitos_default_policy():
    for _ in range(20):
        password = standin.new_password()
        assert len(password) >= 8
        assert any(c.isupper() for c in password) and any(c.islower() for c in password)
        assert any(c.isdigit() for c in password) and "-" in password


def stand_in_config(tmp_path, environ):
    return local.local_config(
        data_dir=tmp_path,
        host="127.0.0.1",
        port=8099,
        endpoint="http://127.0.0.1:5123",
        pool_id="us-east-1_abc",
        client_id="client",
        environ=environ,
    )


def test_local_config_is_the_production_loader_with_cognito_pointed_at_the_stand_in(tmp_path):
    environ = {
        "GATEWAY_WORKERS_MAX_WORKERS": "7",  # other settings still come from the environment
        "GATEWAY_COGNITO_CLIENT_SECRET": "a-production-secret",
        "GATEWAY_DATA_DIR": "/srv/production",
    }
    config = stand_in_config(tmp_path, environ)
    assert config.cognito.endpoint_url == "http://127.0.0.1:5123"
    assert config.cognito.local_stand_in is True
    assert config.cognito.client_secret is None
    assert config.data_dir == tmp_path
    assert config.workers.max_workers == 7
    assert config.logging.format == "text"


def test_local_mode_runs_one_gateway_process_whatever_the_setting(tmp_path):
    """The portal's confirmation and reset codes live in the process that printed them
    (gateway/local/directory.py): with two processes a browser's next connection could reach the
    other one, which refused the right code as "not right" (seen with `make dev` on two cores)."""
    assert stand_in_config(tmp_path, {}).server.processes == 1
    assert stand_in_config(tmp_path, {"GATEWAY_SERVER_PROCESSES": "2"}).server.processes == 1


def test_server_url_keeps_the_trailing_slash_anki_needs():
    assert local.server_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/"
    assert local.server_url("0.0.0.0", 8081, "/anki/") == "http://127.0.0.1:8081/anki/"


def test_the_box_names_url_username_and_password():
    users = [standin.LocalUser("demo@example.com", "Anki-abc123-42", 1)]
    text = local.banner("http://127.0.0.1:8080/", users, lan=["192.0.2.7"])
    assert parse_box(text.splitlines()) == (
        "http://127.0.0.1:8080/",
        "demo@example.com",
        "Anki-abc123-42",
    )
    assert "192.0.2.7" in text


def test_add_user_without_a_running_server_is_picked_up_at_next_start(tmp_path, capsys):
    assert (
        gateway_main(
            [
                "dev",
                "add-user",
                "new@example.com",
                "--password",
                "long-enough",
                "--data",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "at the next start" in capsys.readouterr().out
    assert [u.email for u in standin.load_users(tmp_path)] == ["new@example.com"]
    assert gateway_main(["dev", "--data", str(tmp_path), "add-user", "NEW@example.com"]) == 1
    assert gateway_main(["dev", "add-user", "not-an-email", "--data", str(tmp_path)]) == 1
    assert (
        gateway_main(
            ["dev", "add-user", "x@example.com", "--password", "short", "--data", str(tmp_path)]
        )
        == 1
    )


def test_a_taken_port_is_explained(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert gateway_main(["dev", "--data", str(tmp_path), "--port", str(port)]) == 1
    assert "in use" in capsys.readouterr().err


# -- end to end, as README.md says ---------------------------------------------------------


def parse_box(lines: list[str]) -> tuple[str, str, str]:
    """The first server URL, username and password in local mode's box."""
    found: dict[str, str] = {}
    for line in lines:
        label, _, value = line.strip().partition(":  ")
        if label in ("Server URL", "Username", "Password") and label not in found:
            found[label] = value.strip()
    return found["Server URL"], found["Username"], found["Password"]


class LocalMode:
    """`python -m gateway dev ...` as a subprocess; stdout read line by line in a thread."""

    def __init__(self, data: Path, port: int, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.stderr = (data.parent / f"local-mode-{port}.log").open("ab")
        self.proc = subprocess.Popen(
            # README.md: .venv/bin/python -m gateway dev (here with a test folder and port).
            [sys.executable, "-m", "gateway", "dev", "--data", str(data), "--port", str(port)]
            + list(extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def box(self, timeout: float = 60) -> list[str]:
        """The lines of the box, once its closing rule is printed."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no box within {timeout}s; got {got}") from None
            got.append(line)
            if line.startswith("=") and len([g for g in got if g.startswith("=")]) == 2:
                return got

    def printed_code(self, email: str, timeout: float = 20) -> str:
        """The next code local mode prints on its console for `email`."""
        deadline = time.monotonic() + timeout
        marker = f" code for {email}: "
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no code printed for {email}") from None
            if marker in line:
                return line.rsplit(": ", 1)[1].strip()

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@pytest.fixture
def run_local_mode() -> Iterator[Any]:
    started: list[LocalMode] = []

    def start(data: Path, port: int, *extra: str) -> LocalMode:
        mode = LocalMode(data, port, *extra)
        started.append(mode)
        return mode

    yield start
    for mode in started:
        mode.kill()


def test_local_mode_as_the_readme_says_syncs_with_real_anki_and_stops_clean(
    tmp_path, run_local_mode
):
    data = tmp_path / "data-local"
    port = free_port()
    mode = run_local_mode(data, port)
    url, username, password = parse_box(mode.box())
    assert url == f"http://127.0.0.1:{port}/"
    mode.wait_ready(url)

    laptop = Client(tmp_path / "laptop")
    laptop.login(username, password, url)
    laptop.add_note("made on the laptop")
    assert laptop.sync() == Required.FULL_UPLOAD
    laptop.close()

    # A second user, added while local mode runs, can log in at once.
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "dev",
            "add-user",
            "friend@example.com",
            "--data",
            str(data),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "now (local mode is running)" in added.stdout
    _, friend, friend_password = parse_box(["Server URL:  -", *added.stdout.splitlines()])
    other = Client(tmp_path / "friend")
    other.login(friend, friend_password, url)
    other.close()

    collections = data.absolute() / "collections"
    assert len(live_worker_pids(collections)) == 2  # one stock sync server per account
    assert mode.stop(signal.SIGINT) == 0
    assert live_worker_pids(collections) == []
    assert not (data / local.STATE_FILE).exists()

    # Restarted, moto has forgotten everything; the same users come back with the same
    # identities, so the phone finds the laptop's collection in the same account.
    mode = run_local_mode(data, port)
    url2, username2, password2 = parse_box(mode.box())
    assert (url2, username2, password2) == (url, username, password)
    mode.wait_ready(url)
    phone = Client(tmp_path / "phone")
    phone.login(username, password, url)
    assert phone.sync() == Required.FULL_DOWNLOAD  # an empty device takes the server's
    assert phone.note_fronts() == {"made on the laptop"}
    phone.close()
    assert sorted(p.name for p in (data / "collections").iterdir()) == ["demo", "friend"]

    assert live_worker_pids(collections)
    assert mode.stop(signal.SIGTERM) == 0
    assert live_worker_pids(collections) == []
    users = json.loads((data / standin.USERS_FILE).read_text())["users"]
    assert [u["email"] for u in users] == ["demo@example.com", "friend@example.com"]


@pytest.mark.parametrize(
    ("environ", "backend", "endpoint"),
    [
        ({}, "sqlite", ""),
        ({"GATEWAY_REGISTRY_BACKEND": "dynamodb"}, "dynamodb", "http://127.0.0.1:5123"),
        (
            {
                "GATEWAY_REGISTRY_BACKEND": "dynamodb",
                "GATEWAY_REGISTRY_ENDPOINT_URL": "http://127.0.0.1:5999",
            },
            "dynamodb",
            "http://127.0.0.1:5999",
        ),
    ],
)
def test_local_mode_keeps_sqlite_unless_told_and_then_uses_the_stand_in(
    tmp_path, environ, backend, endpoint
):
    config = stand_in_config(tmp_path, environ)
    assert (config.registry.backend, config.registry.endpoint_url) == (backend, endpoint)


def start_moto_server(port: int) -> subprocess.Popen[bytes]:
    """moto's server as its own process, as compose's `cognito-local` container runs it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    standin.wait_for(f"http://127.0.0.1:{port}", 30)
    return proc


def test_a_restarted_stand_in_gets_its_pool_and_users_back_at_the_next_login(
    tmp_path, run_local_mode
):
    cognito_port = free_port()
    stand_in = start_moto_server(cognito_port)
    try:
        data = tmp_path / "data-local"
        settings = tmp_path / "gateway.yaml"
        # A cached login would not ask the stand-in at all: keep the cache shorter than a restart.
        settings.write_text("auth:\n  cache_ttl_seconds: 1\n")
        endpoint = f"http://127.0.0.1:{cognito_port}"
        mode = run_local_mode(
            data, free_port(), "--cognito-endpoint", endpoint, "--config", str(settings)
        )
        url, username, password = parse_box(mode.box())
        mode.wait_ready(url)
        laptop = Client(tmp_path / "laptop")
        laptop.login(username, password, url)
        laptop.add_note("before the crash")
        laptop.sync()
        laptop.close()

        # The stand-in's container crashes; the engine starts a new one on the same address.
        stand_in.kill()
        stand_in.wait()
        stand_in = start_moto_server(cognito_port)
        time.sleep(1.5)  # past the credential cache

        # Someone signs up on the portal before any login: its calls bring the pool back too
        # (they were a 503 until an Anki login happened to re-create it).
        signed_up = sign_up(requests.Session(), url + "account/", "newcomer@example.com")
        assert signed_up.status_code == 200, signed_up.text[:500]
        assert "/account/confirm" in signed_up.url, signed_up.url

        phone = Client(tmp_path / "phone")
        phone.login(username, password, url)  # was a 500 for ever; now the pool comes back
        assert phone.sync() == Required.FULL_DOWNLOAD
        assert phone.note_fronts() == {"before the crash"}  # same sub, same account
        phone.close()
        assert mode.stop() == 0
    finally:
        stand_in.kill()
        stand_in.wait()
    log = (tmp_path / f"local-mode-{url.split(':')[-1].strip('/')}.log").read_text()
    assert "forgot its pool" in log


def local_user(data: Path, email: str) -> dict[str, Any] | None:
    users = json.loads((data / standin.USERS_FILE).read_text())["users"]
    return next((u for u in users if u["email"] == email), None)


def test_a_portal_sign_up_survives_stand_in_and_local_mode_restarts(tmp_path, run_local_mode):
    cognito_port = free_port()
    stand_in = start_moto_server(cognito_port)
    data = tmp_path / "data-local"
    settings = tmp_path / "gateway.yaml"
    # No cached login hides the stand-in; every sync re-checks the user by `sub` in the background.
    settings.write_text("auth:\n  cache_ttl_seconds: 1\n  recheck_seconds: 1\n")
    port = free_port()
    email, new_password = "newcomer@example.com", "Reset-Pass-2027"
    try:
        endpoint = f"http://127.0.0.1:{cognito_port}"
        mode = run_local_mode(data, port, "--cognito-endpoint", endpoint, "--config", str(settings))
        url, _, _ = parse_box(mode.box())
        mode.wait_ready(url)
        base = url + "account/"
        browser = requests.Session()
        browser.headers["Connection"] = "close"  # each page on its own connection, as a phone's
        assert "/account/confirm" in sign_up(browser, base, email).url
        code = mode.printed_code(email)
        confirmed = post_form(browser, base + "confirm", {"email": email, "code": code})
        assert confirmed.status_code == 200 and "/account/signin" in confirmed.url, confirmed.url
        laptop = Client(tmp_path / "laptop")
        laptop.login(email, PORTAL_PASSWORD, url)
        laptop.add_note("signed up on the portal")
        assert laptop.sync() == Required.FULL_UPLOAD
        laptop.close()

        # A password reset on the portal (with the code printed on the console) is recorded too.
        post_form(browser, base + "forgot", {"email": email})
        fields = {"email": email, "code": mode.printed_code(email), "password": new_password}
        assert post_form(browser, base + "reset", fields).status_code == 200
        recorded = local_user(data, email)
        assert recorded is not None and recorded["password"] == new_password
        assert stat.S_IMODE((data / standin.USERS_FILE).stat().st_mode) == 0o600

        # The stand-in restarts and forgets everyone: the portal user comes back with its `sub`.
        stand_in.kill()
        stand_in.wait()
        stand_in = start_moto_server(cognito_port)
        time.sleep(1.5)  # past the credential cache
        phone = Client(tmp_path / "phone")
        phone.login(email, new_password, url)
        assert phone.sync() == Required.FULL_DOWNLOAD
        assert phone.note_fronts() == {"signed up on the portal"}
        time.sleep(2.5)  # the background re-check by `sub` runs and finds the user
        phone.add_note("after the stand-in restart")
        assert phone.sync() == Required.NO_CHANGES
        phone.close()
        assert mode.stop() == 0
    finally:
        stand_in.kill()
        stand_in.wait()

    # Local mode restarts with a fresh stand-in of its own.
    mode = run_local_mode(data, port, "--config", str(settings))
    url, username, _ = parse_box(mode.box())
    assert username == standin.DEMO_EMAIL  # the box shows the local users, not portal ones
    mode.wait_ready(url)
    tablet = Client(tmp_path / "tablet")
    tablet.login(email, new_password, url)
    assert tablet.sync() == Required.FULL_DOWNLOAD
    assert tablet.note_fronts() == {"signed up on the portal", "after the stand-in restart"}
    tablet.close()
    assert sorted(p.name for p in (data / "collections").iterdir()) == ["newcomer"]

    # Deleting the account on the portal removes the user from local-users.json as well.
    browser = requests.Session()
    signed_in = post_form(browser, base + "signin", {"email": email, "password": new_password})
    assert signed_in.url == base, signed_in.text[:500]
    token = csrf(browser.get(base).text, "delete-")
    fields = {"delete-csrf_token": token, "delete-password": new_password}
    assert browser.post(base + "delete", data=fields, timeout=30).status_code == 200
    assert local_user(data, email) is None
    assert local_user(data, standin.DEMO_EMAIL) is not None
    assert mode.stop() == 0


def test_concurrent_writers_of_the_users_file_lose_nothing(tmp_path):
    # `dev add-user` and the running gateway's portal write the same file.
    def add(n: int) -> None:
        standin.update_users(tmp_path, lambda users: users.append(standin.new_user(f"u{n}@x.org")))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(u.email for u in standin.load_users(tmp_path)) == sorted(
        f"u{n}@x.org" for n in range(30)
    )
    assert stat.S_IMODE((tmp_path / standin.USERS_FILE).stat().st_mode) == 0o600


def test_a_user_disabled_on_the_portal_comes_back_disabled(tmp_path, moto_url):
    from gateway.local.users import PortalUsers

    user = standin.new_user("gone@example.com", "password-1")
    standin.save_users(tmp_path, [user, standin.new_user("other@example.com")])
    PortalUsers(tmp_path, moto_url).removed("GONE@example.com", "disable")
    pool_id, _, _ = standin.bootstrap(moto_url, standin.load_users(tmp_path))
    boto = standin.cognito_client(moto_url)
    assert boto.admin_get_user(UserPoolId=pool_id, Username=user.email)["Enabled"] is False
    PortalUsers(tmp_path, moto_url).removed("gone@example.com", "delete")
    assert [u.email for u in standin.load_users(tmp_path)] == ["other@example.com"]


def test_portal_users_are_listed_without_their_password(tmp_path, capsys):
    mine = standin.LocalUser("me@example.com", "My-Own-Secret-1", 1, portal=True, confirmed=False)
    standin.save_users(tmp_path, [standin.new_user("demo@example.com", "Anki-abc-12"), mine])
    assert gateway_main(["dev", "users", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Anki-abc-12" in out and "me@example.com" in out
    assert "My-Own-Secret-1" not in out and "waiting for its code" in out


async def test_a_sign_up_that_lost_its_seed_to_another_request_is_made_again(tmp_path, moto_url):
    # Another request to the stand-in draws from moto's generator between the seed and the
    # sign-up: the user is made again under a new seed, so its `sub` can be reproduced.
    from gateway.identity.cognito import CognitoProvider
    from gateway.local.directory import StandInDirectory
    from gateway.local.keeper import PoolKeeper
    from gateway.local.users import PortalUsers

    class RacedOnce(PortalUsers):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.seeds: list[int] = []

        def seed(self) -> tuple[int, bool]:
            seed, seeded = super().seed()
            if not self.seeds:
                standin.seed_stand_in(moto_url, seed + 1)  # as if another request drew first
            self.seeds.append(seed)
            return seed, seeded

    standin.use_dummy_aws_credentials()
    pool_id, client_id, _ = standin.bootstrap(moto_url, [])
    config = stand_in_config(tmp_path, {})
    cognito = dataclasses.replace(
        config.cognito, endpoint_url=moto_url, user_pool_id=pool_id, client_id=client_id
    )
    users = RacedOnce(tmp_path, moto_url)
    keeper = PoolKeeper(CognitoProvider(cognito), lambda: (pool_id, client_id), ("", ""), users)
    codes: list[str] = []
    directory = StandInDirectory(
        cognito, keeper=keeper, announce=lambda purpose, email, code: codes.append(code)
    )
    try:
        await directory.sign_up("racer@example.com", "Racer-Pass-1")
        # Waiting for its code: no sign-in, as Cognito (UserNotConfirmedException); moto
        # would let it in, and Anki would sync an account nobody confirmed.
        with pytest.raises(BadCredentials):
            await keeper.authenticate("racer@example.com", "Racer-Pass-1")
        await directory.confirm("racer@example.com", codes[-1])
        assert (await keeper.authenticate("racer@example.com", "Racer-Pass-1")).sub
    finally:
        await directory.close()
        await keeper.close()
    assert len(users.seeds) == 2
    [recorded] = standin.load_users(tmp_path)
    assert recorded.seed == users.seeds[1] and recorded.confirmed and recorded.portal
    assert recorded.sub == standin.expected_sub(recorded.seed)
    listed = standin.cognito_client(moto_url).list_users(UserPoolId=pool_id)["Users"]
    assert [u["Username"] for u in listed] == ["racer@example.com"]


def test_on_a_network_address_a_made_up_reset_code_takes_no_account(tmp_path, run_local_mode):
    # Issue example: `dev --host 0.0.0.0`, then /account/forgot and /account/reset with 000000
    # for the demo user; the new password used to work in Anki. Only the printed code resets.
    data = tmp_path / "data-local"
    port = free_port()
    mode = run_local_mode(data, port, "--host", "0.0.0.0")
    _, username, password = parse_box(mode.box())
    url = f"http://127.0.0.1:{port}/"
    mode.wait_ready(url)
    base = url + "account/"
    stranger = requests.Session()
    post_form(stranger, base + "forgot", {"email": username})
    taken = {"email": username, "code": "000000", "password": "Taken-Over-2027"}
    refused = post_form(stranger, base + "reset", taken)
    assert "That code is not right" in refused.text
    intruder = Client(tmp_path / "intruder")
    with pytest.raises(Exception, match="(?i)password"):
        intruder.login(username, "Taken-Over-2027", url)
    intruder.close()

    owner = Client(tmp_path / "owner")
    owner.login(username, password, url)  # the demo password still works
    owner.close()
    code = mode.printed_code(username)
    assert len(code) == 6 and code.isdigit()
    fields = {"email": username, "code": code, "password": "Owner-Chose-2027"}
    assert "your password is changed" in post_form(stranger, base + "reset", fields).text
    again = post_form(stranger, base + "reset", {**fields, "password": "Second-Use-2027"})
    assert "That code is not right" in again.text  # used up
    owner = Client(tmp_path / "owner2")
    owner.login(username, "Owner-Chose-2027", url)
    owner.close()
    assert mode.stop() == 0


def test_a_portal_sign_up_in_other_case_leaves_a_dev_user_alone(tmp_path, moto_url):
    """The stand-in compares usernames case-sensitively and the portal lower-cases emails, so a
    stranger can sign up `bob@…` beside a `dev add-user Bob@…`: that must neither drop Bob's
    record (he would not come back after a restart: locked out) nor let the stranger's password
    reset or confirmation change it (Bob re-created with the stranger's password)."""
    from gateway.local.users import PortalUsers

    bob = standin.new_user("Bob@Example.com", "bobs-own-password")
    standin.save_users(tmp_path, [bob])
    users = PortalUsers(tmp_path, moto_url)
    users.signed_up("bob@example.com", "strangers-password", 7, "sub-of-the-stranger")
    # Signed up again (the stand-in forgot the waiting one): it replaces that one only.
    users.signed_up("bob@example.com", "strangers-password", 8, "sub-of-the-stranger-2")
    users.confirmed("bob@example.com")
    users.password_set("bob@example.com", "strangers-new-password")
    saved = {u.email: u for u in standin.load_users(tmp_path)}
    assert sorted(saved) == ["Bob@Example.com", "bob@example.com"]
    kept = saved["Bob@Example.com"]
    assert (kept.password, kept.sub, kept.portal, kept.seed) == (
        "bobs-own-password",
        bob.sub,
        False,
        bob.seed,
    )
    stranger = saved["bob@example.com"]
    assert (stranger.password, stranger.seed, stranger.confirmed) == (
        "strangers-new-password",
        8,
        True,
    )
