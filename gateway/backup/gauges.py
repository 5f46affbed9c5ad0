"""The last backup's gauges, read at scrape time from the state file `python -m gateway backup`
leaves in the data folder (snapshot.py `last_backup`): when it finished (Unix time) and how many
accounts it could not copy consistently. No samples before the first backup.

    BackupGauges(data_dir)   a prometheus-client `Collector`, registered by the app
                             (appkeys.GAUGES) and rendered by `metrics.render`
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.backup.snapshot import last_backup


class BackupGauges(Collector):
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def collect(self) -> Iterator[Any]:
        state = last_backup(self._data_dir)
        if state is None:
            return
        finished = GaugeMetricFamily(
            "gateway_backup_last_success_timestamp_seconds",
            "When the last backup finished (python -m gateway backup), in Unix time.",
        )
        finished.add_metric([], state["finished"])
        skipped = GaugeMetricFamily(
            "gateway_backup_missed_accounts",
            "Accounts the last backup could not copy consistently within its bound.",
        )
        skipped.add_metric([], state["missed"])
        yield from (finished, skipped)
