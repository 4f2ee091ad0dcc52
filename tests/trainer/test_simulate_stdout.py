"""`edge-trainer simulate --out -`: the CSV on stdout and nothing else, for a pipe into
`edge-fleet replay -` (issue 16, item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, run_cli

ARGS = ("--rows", "400", "--faults", "spike", "--seed", "7")


def test_stdout_holds_exactly_the_csv_the_file_would(tmp_path: Path):
    data = tmp_path / "sim.csv"
    to_file = run_cli("trainer", "simulate", "--out", str(data), *ARGS)
    assert to_file.returncode == 0, to_file.stderr
    piped = run_cli("trainer", "simulate", "--out", "-", *ARGS)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == data.read_text()
    assert not (ROOT / "-").exists(), "'-' is stdout, not a file named '-'"
    # The summary a file write prints on stdout goes to stderr, with the same fault placement.
    placed = to_file.stdout.split(": 400 rows, ")[1].strip()
    assert f"wrote 400 rows to stdout, {placed}" in piped.stderr, piped.stderr


def test_a_reader_that_stops_early_gets_a_clear_exit_not_a_traceback():
    """More than a pipe's buffer of rows, into a reader that closes after 100 bytes."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "trainer", "simulate", "--out", "-", "--rows", "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert sim.stdout is not None and sim.stderr is not None
    assert len(sim.stdout.read(100)) == 100
    sim.stdout.close()
    err = sim.stderr.read()
    sim.stderr.close()
    assert sim.wait(timeout=120) == 1, err
    assert err.strip() == "edge-trainer: error: stdout closed before the CSV was written", err
