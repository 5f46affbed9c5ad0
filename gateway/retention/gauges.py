"""The last `accounts prune` run's gauges, read at scrape time from the state file the command
(another process, prune.py `last_run`) leaves in the data folder: when it finished (Unix time)
and its accounts by outcome. No samples before the first run.

    PruneGauges(data_dir)   a prometheus-client `Collector`, registered by the app
                            (appkeys.GAUGES) and rendered by `metrics.render`
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.retention.prune import last_run

#: `accounts prune` outcomes (prune.py).
OUTCOMES = ("deleted", "would_delete", "skipped", "failed")


class PruneGauges(Collector):
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    def collect(self) -> Iterator[Any]:
        state = last_run(self._data_dir)
        if state is None:
            return
        finished = GaugeMetricFamily(
            "gateway_prune_last_run_timestamp_seconds",
            "When `accounts prune` last finished (a dry run too), in Unix time.",
        )
        finished.add_metric([], state["finished"])
        counted = GaugeMetricFamily(
            "gateway_prune_last_run_accounts",
            "Accounts of the last `accounts prune` run, by outcome (would_delete: a dry run).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            counted.add_metric([outcome], state.get(outcome, 0))
        yield from (finished, counted)
