"""`edge-fleet replay -`: a CSV on stdin, and what a broken or hostile pipe gets (issue 16,
item 5). Every case here fails before any connection: the broker port is closed, so a replay
that got past reading would exit 1 (unreachable), not 2."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from agent.model.table import TableError
from fleet.replay import STDIN_LIMIT_BYTES, read_stdin_table, readings_from_csv, readings_from_table
from tests.conftest import ROOT

NOWHERE = ("--broker", "127.0.0.1:1", "--device", "d", "--asset", "a")


def replay_stdin(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", "replay", "-", *NOWHERE],
        input=data,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )


def test_stdin_reads_as_the_same_file_does(tmp_path: Path):
    text = "timestamp;a;anomaly\n2026-01-01T00:00:00Z;1.5;0\n2026-01-01T00:01:00Z;2.5;1\n"
    data = tmp_path / "r.csv"
    data.write_text(text)
    piped = readings_from_table(read_stdin_table(io.BytesIO(("\ufeff" + text).encode())))
    assert piped == readings_from_csv(data)
    assert piped[1] == {"ts": "2026-01-01T00:01:00+00:00", "a": 2.5}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "nothing was piped in"),
        (b"\n \n", "nothing was piped in"),
        (b"\xff\xfe\x00garbage\x80", "not UTF-8"),
        (b"just one line\n", "needs a header row and at least one data row"),
        (b"hello world\nthis is not, a table\n", "row 2 has 2 fields, header has 1"),
        (b"name,colour\npump,red\nvalve,blue\n", "no numeric sensor column"),
        (b"a,b\n1," + b"x" * 200_000 + b"\n", "field larger than field limit"),
        (b"ts,a\n1700000000,1\n1700000060,nan\n", "row 3: not finite"),
    ],
    ids=["empty", "blank", "binary", "header-only", "ragged", "no-numbers", "huge-field", "nan"],
)
def test_garbage_on_stdin_is_a_clear_error_and_exit_2(data: bytes, said: str):
    result = replay_stdin(data)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith("edge-fleet: error: <stdin>") and said in err, err
    assert "Traceback" not in err and result.stdout == b""


def test_an_endless_stdin_is_cut_at_the_bound_not_read_into_memory():
    """`yes` never ends: the replay reads one byte past its bound, says so, and exits."""
    endless = subprocess.Popen(["yes", "1,2"], stdout=subprocess.PIPE)
    assert endless.stdout is not None
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fleet", "replay", "-", *NOWHERE],
            stdin=endless.stdout,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        endless.stdout.close()
        endless.kill()
        endless.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    said = f"<stdin>: more than {STDIN_LIMIT_BYTES} bytes; write the CSV to a file"
    assert said in result.stderr, result.stderr


def test_the_bound_is_the_limit_given(tmp_path: Path):
    text = b"ts,a\n1700000000,1.5\n"
    assert read_stdin_table(io.BytesIO(text), limit=len(text)).rows == 1
    with pytest.raises(TableError, match=f"more than {len(text) - 1} bytes"):
        read_stdin_table(io.BytesIO(text), limit=len(text) - 1)


def test_a_file_the_csv_module_refuses_is_a_clear_error(tmp_path: Path):
    """A field over the csv module's limit was a traceback (exit 1) from a file too."""
    data = tmp_path / "wide.csv"
    data.write_bytes(b"a,b\n1," + b"x" * 200_000 + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "fleet", "replay", str(data), *NOWHERE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert "wide.csv: not a CSV table: field larger than field limit" in result.stderr


def test_a_terminal_on_stdin_is_refused_rather_than_waited_on():
    """`replay -` typed without a pipe would wait for input forever: it says what is missing."""
    main, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fleet", "replay", "-", *NOWHERE],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(terminal)
        os.close(main)
    assert result.returncode == 2, result.stderr
    assert "stdin is a terminal; pipe a CSV in" in result.stderr
