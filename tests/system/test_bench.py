"""`make bench` keeps working: a quick run produces every figure (timings are not judged here;
they live in the benchmark's own output)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from trainer.detectors import DETECTORS


def test_a_quick_benchmark_run_reports_every_measure(tmp_path: Path):
    out = tmp_path / "bench.json"
    done = run_cli("bench", "--quick", "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert set(results["score_us"]) == set(DETECTORS)
    assert set(results["stream_us"]) == set(DETECTORS)
    assert all(s["batched"] > 0 for s in results["stream_us"].values())
    assert "stream layer per reading" in done.stdout
    for case in ("drain_single", "drain_batched"):
        assert results[case]["agent_readings_per_s"] > 0 < results[case]["ceiling_readings_per_s"]
        assert results[case]["peak_rss_mib"] > 0
    assert results["sparkplug_drain"]["agent_readings_per_s"] > 0
    assert results["sparkplug_decode"]["us_per_message"] > 0
    assert "Sparkplug B DDATA" in done.stdout
    assert results["alert_latency_ms"]["n"] > 0, "alerts must arrive for the latency case"
    assert results["startup_s"]["n"] == 3
    assert 0 < results["dependency_floor_rss_mib"] <= results["startup_s"]["idle_rss_mib"]
    push = results["fleet_push"]
    assert push["agents"] == 3 and 0 < push["switched_all_s"] <= push["applied_all_s"]
    assert "drain, 100 readings/message" in done.stdout
    assert set(results["adaptation_us"]) == {"5 sensors", "8 sensors"}
    assert "adaptation over the online model, 8 sensors" in done.stdout


def test_the_stream_rows_run_alone():
    """`--only` runs the stream layer's rows by themselves (JSON on stdout): the adaptation
    row trains `online` for five and eight sensors and times each, in the bench's own process,
    which `--core` does not pin (it pins the agent of the drain rows: the JSON said
    `"pinned_core": 0` of figures taken on any core); an unknown row is refused with the rows
    it knows."""
    done = run_cli("bench", "--only", "adaptation_us", "--quick", "--core", "0", timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["pinned_core"] is None
    rows = results["adaptation_us"]
    assert set(rows) == {"5 sensors", "8 sensors"}
    for row in rows.values():
        assert row["n"] == 300 and row["layer_us"] > 0 < row["online_us"]
        assert row["state_bytes"] > 0 < row["dump_us"]
    wrong = run_cli("bench", "--only", "adaptation", "--quick")
    assert wrong.returncode != 0
    assert "unknown rows ['adaptation']" in wrong.stderr and "adaptation_us" in wrong.stderr
