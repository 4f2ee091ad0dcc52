"""Drift reporting (#15): the status's summary stays small whatever the number of assets, and
the metrics carry one gauge per asset that reports drift."""

from __future__ import annotations

import json

from agent.drift import STATUS_MOST, summary
from agent.metrics import Histogram, InboxCounts, Snapshot, render


def test_the_status_summary_is_the_same_size_for_1000_assets_as_for_10() -> None:
    drifts = {f"pump-{i:04d}": (i % 100) / 100 for i in range(1000)}
    big = summary(drifts, level=0.5)
    assert (big["assets"], big["above"]) == (1000, 500)
    assert [m["drift"] for m in big["most"]] == [0.99] * STATUS_MOST
    assert [m["asset"] for m in big["most"]] == [f"pump-{i:04d}" for i in (99, 199, 299, 399, 499)]
    small = summary({a: d for a, d in list(drifts.items())[:10]}, level=0.5)
    assert len(json.dumps(big)) <= len(json.dumps(small)) + 20


def test_no_asset_reporting_drift_gives_an_empty_summary() -> None:
    assert summary({}, level=0.3) == {"level": 0.3, "assets": 0, "above": 0, "most": []}


def _snapshot(**changes: object) -> Snapshot:
    fields: dict[str, object] = dict(
        device_id="gw",
        model={"id": "m", "version": "1"},
        started_at=0.0,
        readings=0,
        scored=0,
        batches=0,
        redelivered=0,
        imputed=0,
        storage_failures=0,
        alerts_by_level={},
        dead_letters_by_reason={},
        evictions_by_reason={},
        outbox_pending=0,
        buffered_readings=0,
        database_bytes=0,
        storage_ok=True,
        local_connected=True,
        upstream_connected=True,
        publish_latency=Histogram((0.1,)),
        inbox=InboxCounts(0, 0, 0, 0),
    )
    return Snapshot(**(fields | changes))  # type: ignore[arg-type]


def test_metrics_carry_a_drift_gauge_per_reporting_asset() -> None:
    text = render(_snapshot(drift={"pump-2": 0.25, "pump-1": 0.125}, stream_states_replaced=3))
    lines = text.splitlines()
    gauges = [line for line in lines if line.startswith("edge_agent_score_drift{")]
    assert gauges == ['edge_agent_score_drift{asset="pump-1"} 0.125',
                      'edge_agent_score_drift{asset="pump-2"} 0.25']  # fmt: skip
    assert "edge_agent_stream_states_replaced_total 3" in lines
    quiet = render(_snapshot())
    assert "# TYPE edge_agent_score_drift gauge" in quiet
    assert not [line for line in quiet.splitlines() if line.startswith("edge_agent_score_drift")]
