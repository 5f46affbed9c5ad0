"""The one-sync-per-account rule on the wire: requests as Anki sends them, through the gateway
to the stock server, in the orders that made two devices lose notes (issue 21 item 1)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import requests
import zstandard

from gateway.appkeys import POOL
from tests.ankiclient import Client

PASSWORD = "Correct-Horse-9"
START = {"minUsn": 0, "lnewer": True, "graves": None}
NO_GRAVES = {"chunk": {"cards": [], "notes": [], "decks": []}}
IDLE = 1.0


class Device:
    """Requests of one sync session (`s`) with the account's host key."""

    def __init__(self, url: str, key: str, session: str) -> None:
        self.url, self.key, self.session = url, key, session

    def post(self, method: str, payload: object = None) -> requests.Response:
        body = zstandard.ZstdCompressor().compress(json.dumps(payload or {}).encode())
        return self.stream(method, body)

    def stream(self, method: str, body: bytes | Iterable[bytes]) -> requests.Response:
        """POSTs a body as it comes (chunked when it is an iterable)."""
        header = {"v": 11, "k": self.key, "c": "test", "s": self.session}
        return requests.post(
            self.url + "sync/" + method,
            data=body,
            headers={"anki-sync": json.dumps(header, separators=(",", ":"))},
            timeout=30,
        )

    def send(self, method: str, payload: object = None) -> tuple[int, bytes]:
        answer = self.post(method, payload)
        if answer.status_code != 200:
            return answer.status_code, answer.content
        return 200, zstandard.ZstdDecompressor().decompressobj().decompress(answer.content)


@pytest.fixture(scope="module")
def gateways(
    module_cognito, start_module_gateway, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Any, str]:
    """Two gateway processes on one data folder (sync sessions lapse after IDLE s), and the
    host key of an account with a collection. Shared by the module's tests: each uses sync
    sessions of its own and leaves the account free (aborted, finished or lapsed)."""
    tmp = tmp_path_factory.mktemp("wire")
    module_cognito.add_user("quinn", PASSWORD, "quinn@example.com")
    config = module_cognito.config(tmp / "data", workers={"sync_session_idle_seconds": IDLE})
    gw, other_gw = start_module_gateway(config), start_module_gateway(config)
    client = Client(tmp / "device")
    client.add_note("seed")
    auth = client.login("quinn", PASSWORD, gw.url)
    client.sync(media=False)
    client.close()
    return gw, other_gw, auth.hkey


@pytest.fixture(scope="module")
def account(gateways) -> tuple[str, str, str]:
    gw, other_gw, key = gateways
    return gw.url, key, other_gw.url


def devices(account, *sessions: str) -> list[Device]:
    url, key, _ = account
    return [Device(url, key, s) for s in sessions]


def test_the_rule_holds_across_two_gateway_processes_on_one_data_folder(account):
    url, key, other_url = account
    first, second = Device(url, key, "first-4"), Device(other_url, key, "second-4")
    assert first.send("start", START)[0] == 200
    assert second.send("start", START) == (409, b"409")
    assert second.send("abort") == (200, b"null")
    assert first.send("applyGraves", NO_GRAVES) == (200, b"null")
    assert first.send("abort")[0] == 200
    assert second.send("start", START)[0] == 200
    assert second.send("abort")[0] == 200


def test_a_second_start_gets_the_stock_409_and_the_first_sync_goes_on(account):
    first, second = devices(account, "first-1", "second-1")
    assert first.send("meta", {"v": 11, "cv": "test"})[0] == 200
    assert first.send("start", START)[0] == 200
    assert second.send("start", START) == (409, b"409")
    assert second.send("meta", {"v": 11, "cv": "test"}) == (409, b"409")
    assert second.send("applyChanges", {"changes": {}})[0] == 409
    # The loser's abort ends only its own (absent) sync: the stock answer, JSON null.
    assert second.send("abort") == (200, b"null")
    assert first.send("applyGraves", NO_GRAVES) == (200, b"null")
    assert first.send("abort") == (200, b"null")
    # Released: the other device may sync now.
    assert second.send("start", START)[0] == 200
    assert second.send("abort")[0] == 200


def test_finish_releases_the_account(account):
    first, second = devices(account, "first-2", "second-2")
    assert first.send("start", START)[0] == 200
    assert second.send("upload")[0] == 409  # a full upload would drop the live sync
    assert second.send("download")[0] == 409
    assert first.send("applyGraves", NO_GRAVES)[0] == 200
    status, _ = first.send("finish")
    assert status in (200, 400)  # the stock server judges the half-made sync; it ends either way
    assert second.send("start", START)[0] == 200
    assert second.send("abort")[0] == 200


def test_an_abandoned_sync_lapses_after_the_idle_limit_and_cannot_come_back(account):
    lost, other = devices(account, "lost-3", "other-3")
    assert lost.send("start", START)[0] == 200
    assert other.send("start", START)[0] == 409
    time.sleep(IDLE + 0.3)
    assert other.send("start", START)[0] == 200
    # The phone is back: its requests touch nothing of the live sync.
    assert lost.send("applyGraves", NO_GRAVES)[0] == 409
    assert lost.send("abort") == (200, b"null")
    assert other.send("applyGraves", NO_GRAVES) == (200, b"null")
    assert other.send("abort")[0] == 200
    # Nobody holds the account now: the cut sync is told to try again, not "only one copy".
    assert lost.send("applyGraves", NO_GRAVES)[0] == 503


def test_a_sync_whose_worker_stopped_is_told_to_retry_and_another_device_may_start(gateways):
    # A backup, a crash, the memory limit or eviction stops the worker half-way through a
    # sync: its state is gone, so the lease goes with it (before: the cut sync's next request
    # reached a fresh worker, and every other device got 409 until the lease lapsed).
    gw, _, key = gateways
    cut, other = Device(gw.url, key, "cut-5"), Device(gw.url, key, "other-5")
    assert cut.send("start", START)[0] == 200
    gw.call(gw.app[POOL].stop("quinn"))
    assert cut.send("applyGraves", NO_GRAVES)[0] == 503
    assert other.send("start", START)[0] == 200
    assert cut.send("applyGraves", NO_GRAVES)[0] == 409
    assert other.send("applyGraves", NO_GRAVES) == (200, b"null")
    assert other.send("abort")[0] == 200


def test_a_request_in_flight_longer_than_the_idle_limit_keeps_its_sync(account):
    # A slow phone: its applyChanges body trickles in for about 2.4 s, more than IDLE. The
    # lease must hold while it is in flight, and lapse only IDLE after it is answered.
    slow, other = devices(account, "slow-6", "other-6")
    assert slow.send("start", START)[0] == 200
    padding = os.urandom(150_000).hex()  # about 150 KB on the wire
    body = zstandard.ZstdCompressor().compress(json.dumps({"changes": {"pad": padding}}).encode())
    pieces = [body[:70_000]] + [body[i : i + 10_000] for i in range(70_000, len(body), 10_000)]

    def trickle() -> Iterator[bytes]:
        for n, piece in enumerate(pieces):
            if n:
                time.sleep(2.4 / (len(pieces) - 1))
            yield piece

    answers: list[int] = []
    sending = threading.Thread(
        target=lambda: answers.append(slow.stream("applyChanges", trickle()).status_code)
    )
    sending.start()
    time.sleep(IDLE + 0.6)
    assert sending.is_alive()
    assert other.send("start", START) == (409, b"409")  # before: 200, taking the sync over
    sending.join(30)
    assert answers and answers[0] != 503
    assert other.send("start", START) == (409, b"409")  # the idle clock starts at its answer
    time.sleep(IDLE + 0.3)


def test_a_sync_the_stock_server_dropped_holds_the_account_no_longer(account):
    # The holder's own meta ends its sync upstream (the stock server drops it); requests of the
    # ended sync, each answered 409 by the worker, renewed the lease: a device pinging them more
    # often than the idle limit kept every other device out for ever.
    holder, other = devices(account, "holder-7", "other-7")
    assert holder.send("start", START)[0] == 200
    assert holder.send("meta", {"v": 11, "cv": "test"})[0] == 200
    deadline = time.monotonic() + 2 * IDLE + 0.5
    while time.monotonic() < deadline:
        assert holder.send("applyGraves", NO_GRAVES)[0] in (409, 503)
        time.sleep(IDLE / 4)
    assert other.send("start", START)[0] == 200
    assert other.send("abort")[0] == 200


def test_starts_racing_through_two_gateway_processes_let_exactly_one_sync_in(account):
    url, key, other_url = account
    racers = [Device(url if n % 2 else other_url, key, f"racer-{n}-8") for n in range(8)]
    barrier = threading.Barrier(len(racers))
    answers: dict[str, int] = {}

    def race(device: Device) -> None:
        barrier.wait(10)
        answers[device.session] = device.send("start", START)[0]

    threads = [threading.Thread(target=race, args=(d,)) for d in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [s for s, status in answers.items() if status == 200]
    assert len(answers) == len(racers) and len(winners) == 1, answers
    assert sorted(answers.values()) == [200] + [409] * (len(racers) - 1), answers
    winner = next(d for d in racers if d.session == winners[0])
    for loser in racers:
        if loser is not winner:
            assert loser.send("abort") == (200, b"null")
    assert winner.send("applyGraves", NO_GRAVES) == (200, b"null")
    assert winner.send("abort") == (200, b"null")
