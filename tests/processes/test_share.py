"""How many processes, and each one's share of the host-wide bounds."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.processes.share import process_count, share
from tests.conftest import fake_provider_config


@pytest.mark.parametrize(
    ("setting", "cores", "cluster", "expected"),
    [
        (0, 2, False, 2),
        (0, 1, False, 1),
        (0, 0, False, 1),
        (3, 2, False, 3),
        (1, 8, False, 1),
        (0, 8, True, 1),
        (1, 8, True, 1),
    ],
)
def test_process_count(setting: int, cores: int, cluster: bool, expected: int) -> None:
    assert process_count(setting, cores, cluster) == expected


def test_each_process_gets_its_share_rounded_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = fake_provider_config(tmp_path)
    config = dataclasses.replace(
        config,
        workers=dataclasses.replace(config.workers, max_workers=5, max_answers_on_disk=8),
        auth=dataclasses.replace(
            config.auth,
            max_failures_per_user=10,
            max_failures_per_address=1,
            recheck_calls_per_second=10.0,
        ),
        server=dataclasses.replace(config.server, max_requests_per_address=32),
    )
    two = share(config, 2)
    assert two.workers.max_workers == 3
    assert two.workers.max_answers_on_disk == 4
    assert two.auth.max_failures_per_user == 5
    assert two.auth.max_failures_per_address == 1  # never below 1
    assert two.auth.recheck_calls_per_second == 5.0
    assert two.server.max_requests_per_address == 16
    assert share(config, 1) is config
