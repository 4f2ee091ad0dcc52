"""How `edge-fleet replay` turns a CSV's time column into reading timestamps."""

from __future__ import annotations

from pathlib import Path

from agent.ingest import parse_ts
from fleet.replay import readings_from_csv
from tests.conftest import run_cli


def test_time_cells_become_timestamps_the_agent_accepts(tmp_path: Path):
    for header, cell, want in (
        ("ts", "1700000000", 1700000000.0),
        ("timestamp", "2026-01-01T00:00:00Z", 1767225600.0),
        ("datetime", "2026-01-01 00:00:00", 1767225600.0),  # naive: taken as UTC
    ):
        data = tmp_path / f"{header}.csv"
        data.write_text(f"{header};a\n{cell};1.5\n")
        (reading,) = readings_from_csv(data)
        assert parse_ts(reading["ts"]) == want and reading["a"] == 1.5


def test_an_unreadable_time_is_named_with_its_row(tmp_path: Path):
    data = tmp_path / "odd.csv"
    data.write_text("date,a\n2026-01-01T00:00:00Z,1\n03/09/2020,2\n")
    result = run_cli(
        "fleet", "replay", str(data), "--broker", "127.0.0.1:1", "--device", "d", "--asset", "a"
    )
    assert result.returncode == 2
    assert "odd.csv" in result.stderr and "row 3" in result.stderr and "03/09/2020" in result.stderr


def test_replay_says_what_it_needs(tmp_path: Path):
    """Neither a topic (--device and --asset) nor a Sparkplug address, or a malformed one:
    a clear error before any connection (the broker port is closed)."""
    data = tmp_path / "r.csv"
    data.write_text("ts,a\n1700000000,1.5\n")
    broker = ("--broker", "127.0.0.1:1")
    for extra, said in (
        ((), "--device and --asset are required (or --sparkplug)"),
        (("--sparkplug", "plant/line-1"), "got 'plant/line-1'"),
        (("--sparkplug", "plant/line#/pump"), "got 'plant/line#/pump'"),
        (("--sparkplug", "plant//pump"), "expected GROUP/NODE/DEVICE"),
    ):
        result = run_cli("fleet", "replay", str(data), *broker, *extra)
        assert result.returncode == 2 and said in result.stderr, (extra, result.stderr)
