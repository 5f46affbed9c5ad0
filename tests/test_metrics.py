"""GET /metrics after real syncs (the real `anki` client, stock servers, moto as Cognito)."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app, server_options
from gateway.identity.fake import FakeProvider
from gateway.ops.metricsserver import METRICS_PORT
from tests.conftest import fake_provider_config
from tests.test_identity_e2e import PASSWORD, login_status, synced_device

TOKEN = "metrics-token-0123456789"


def scrape(url: str, token: str | None = None) -> dict[str, float]:
    """{'name{label="v",...}': value} of every sample."""
    request = urllib.request.Request(url)  # noqa: S310 - loopback http only
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def metrics_url(gw: Any) -> str:
    return f"http://127.0.0.1:{gw.app[METRICS_PORT]}/metrics"


def test_a_real_sync_shows_in_the_counters_and_gauges(cognito, tmp_path, start_gateway) -> None:
    cognito.add_user("mia", PASSWORD, "mia@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    before = scrape(metrics_url(gw))
    device = synced_device(tmp_path, gw, "m", "mia")
    device.add_media("sound.mp3", os.urandom(50_000))  # incompressible: counted as sent
    device.sync()
    assert login_status(gw.url, "mia", "wrong-password") == 403
    after = scrape(metrics_url(gw))

    def grew(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew('gateway_logins_total{outcome="ok"}') == 1
    assert grew('gateway_logins_total{outcome="bad_credentials"}') == 1
    assert grew('gateway_requests_total{code="2xx",route="sync"}') >= 3
    assert grew('gateway_requests_total{code="2xx",route="media"}') >= 1
    assert grew('gateway_requests_total{code="4xx",route="login"}') == 1
    assert (
        grew('gateway_cognito_request_duration_seconds_count{operation="admin_initiate_auth"}') == 2
    )
    assert (
        grew('gateway_cognito_errors_total{kind="rejected",operation="admin_initiate_auth"}') == 1
    )
    assert grew("gateway_worker_starts_total{}") == 1
    assert grew('gateway_proxied_bytes_total{direction="upload"}') > 40_000  # media + collection
    assert grew('gateway_proxied_bytes_total{direction="download"}') > 0
    assert after['gateway_workers{state="live"}'] == 1
    assert after['gateway_accounts{status="active"}'] == 1
    assert after["gateway_data_free_bytes{}"] > 0
    text = urllib.request.urlopen(metrics_url(gw), timeout=10).read().decode()  # noqa: S310
    for private in ("mia", "example.com", device.auth.hkey):
        assert private not in text
    device.close()


def test_a_client_closing_after_a_whole_answer_is_a_success_not_client_gone(
    cognito, tmp_path, start_gateway, caplog
) -> None:
    # Anki closes the connection right after reading msync/begin's answer: measured as 499
    # "client gone" before, which counted every media sync as a 4xx.
    caplog.set_level(logging.INFO)
    cognito.add_user("ola", PASSWORD, "ola@example.com")
    gw = start_gateway(cognito.config(tmp_path / "data"))
    device = synced_device(tmp_path, gw, "o", "ola")
    statuses = [
        r.status for r in caplog.records if r.getMessage() == "request" and "msync" in r.path
    ]
    gone = [getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "client gone"]
    assert statuses and set(statuses) == {200}, gone
    assert not [r for r in caplog.records if r.getMessage() == "client gone"]
    device.close()


def test_metrics_are_not_on_the_public_port_unless_a_token_is_set(
    cognito, tmp_path, start_gateway
) -> None:
    gw = start_gateway(cognito.config(tmp_path / "a"))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(gw.url + "metrics", timeout=10)  # noqa: S310
    assert info.value.code == 404

    from gateway.config import Secret

    gw = start_gateway(cognito.config(tmp_path / "b", metrics={"bearer_token": Secret(TOKEN)}))
    for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
        with pytest.raises(urllib.error.HTTPError) as info:
            scrape(gw.url + "metrics", token)
        assert info.value.code == 401
    assert 'gateway_accounts{status="active"}' in scrape(gw.url + "metrics", TOKEN)


def test_the_listener_is_loopback_by_default(cognito, tmp_path) -> None:
    config = cognito.config(tmp_path / "data")
    assert (config.metrics.host, config.metrics.enabled) == ("127.0.0.1", True)


def test_usage_totals_over_all_accounts_are_gauges_without_names(
    cognito, tmp_path, start_gateway
) -> None:
    cognito.add_user("kim", PASSWORD, "kim@example.com")
    config = cognito.config(tmp_path / "data")
    gw = start_gateway(config)
    device = synced_device(tmp_path, gw, "k", "kim")
    device.add_media("photo.jpg", os.urandom(1_200_000))
    device.sync()
    device.close()
    # The totals are walked at start and then every few minutes, not per scrape: a gateway
    # started now on the same data folder has walked the synced account. Its media limit
    # (1 MB) is below the 1.2 MB held: one account over, as a count and a share.
    fresh = start_gateway(cognito.config(tmp_path / "data", quota={"media_megs": 1}))
    deadline = time.monotonic() + 30
    while "gateway_usage_media_files{}" not in (got := scrape(metrics_url(fresh))):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    from gateway.ops.usage import usage

    used = usage(config.collections_dir / "kim")
    assert used.media_files == 1 and used.collection_bytes > 0
    assert got["gateway_usage_media_files{}"] == used.media_files
    assert got["gateway_usage_media_bytes{}"] == used.media_bytes == 1_200_000
    assert got["gateway_usage_collection_bytes{}"] == used.collection_bytes
    assert got["gateway_usage_account_folders{}"] == 1
    assert got["gateway_usage_computed_timestamp_seconds{}"] <= time.time()
    assert got["gateway_quota_accounts_over{}"] == 1
    assert got['gateway_quota_media_share_bucket{le="1.0"}'] == 0
    assert got['gateway_quota_media_share_bucket{le="1.5"}'] == 1
    assert got["gateway_quota_media_share_sum{}"] == pytest.approx(1.2)
    assert got['gateway_quota_collection_share_bucket{le="0.1"}'] == 1
    # The first gateway walked before the sync and has not walked again since.
    assert scrape(metrics_url(gw)).get("gateway_usage_media_files{}") == 0


async def test_wrong_metrics_tokens_count_like_wrong_passwords_then_429(tmp_path, serve_app):
    # Issue 16, item 6: 1,000 guesses at 2,400/s were all answered 401, none 429.
    config = fake_provider_config(
        tmp_path,
        GATEWAY_METRICS_BEARER_TOKEN=TOKEN,
        GATEWAY_METRICS_ENABLED="false",
        GATEWAY_AUTH_MAX_FAILURES_PER_ADDRESS="5",
    )
    port = await serve_app(create_app(config, provider=FakeProvider()), **server_options(config))
    url = f"http://127.0.0.1:{port}/metrics"

    async def scrape_with(session, token: str) -> tuple[int, str | None]:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(url, headers=headers) as r:
            return r.status, r.headers.get("Retry-After")

    async with aiohttp.ClientSession() as session:
        assert (await scrape_with(session, TOKEN))[0] == 200  # the right one is not counted
        guesses = [await scrape_with(session, f"guess-{i:020d}") for i in range(8)]
        assert [status for status, _ in guesses] == [401] * 5 + [429] * 3
        assert all(int(wait) > 0 for _, wait in guesses[5:])
        # Blocked for the right token too: a 200 among the 429s would confirm a guess.
        status, wait = await scrape_with(session, TOKEN)
        assert status == 429 and int(wait) > 0
