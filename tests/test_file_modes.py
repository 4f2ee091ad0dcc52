"""Files the commands write get the mode the umask asks for (issue 17, item 4): under the
systemd unit's `UMask=0027` node_exporter's group must read the metrics textfile, and a model,
report or export is as readable as any file the user makes. The fleet's private key stays 0600
whatever the umask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.metrics import write_textfile
from tests.agent.buffers import agent_database
from tests.conftest import ROOT


def _run(umask: int, *args: str) -> None:
    """`python -m <package> ...` as run_cli does, under `umask`."""
    done = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
        umask=umask,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize(
    ("umask", "expected"), [(0o027, 0o640), (0o002, 0o664)], ids=["umask-0027", "umask-0002"]
)
def test_trainer_files_follow_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    data, model, page = tmp_path / "train.csv", tmp_path / "m.onnx", tmp_path / "report.html"
    _run(umask, "trainer", "simulate", "--out", str(data), "--rows", "400", "--faults", "spike")
    _run(umask, "trainer", "train", str(data), "--algorithm", "pca", "--out", str(model))
    _run(umask, "trainer", "report", str(model), str(data), "--out", str(page))
    assert {p.name: _mode(p) for p in (data, model, page)} == dict.fromkeys(
        (data.name, model.name, page.name), expected
    )


def test_buffer_export_follows_the_umask(tmp_path: Path) -> None:
    data, out = agent_database(tmp_path / "data", rows=50), tmp_path / "out.csv"
    _run(0o027, "agent", "buffer", "export", "--data-dir", str(data), "--out", str(out))
    assert _mode(out) == 0o640


def test_the_metrics_textfile_follows_the_umask(tmp_path: Path) -> None:
    """Written by the agent's own writer, under the unit's umask (set here in-process)."""
    textfile = tmp_path / "metrics.prom"
    before = os.umask(0o027)
    try:
        write_textfile(textfile, "edge_agent_up 1\n")
        write_textfile(textfile, "edge_agent_up 1\n")  # the replacement too, not only the first
    finally:
        os.umask(before)
    assert _mode(textfile) == 0o640


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask-0000", "umask-0022"])
def test_the_private_key_stays_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    _run(umask, "fleet", "keygen", "--out", str(tmp_path / "keys"))
    assert _mode(tmp_path / "keys" / "fleet.key") == 0o600
    assert _mode(tmp_path / "keys" / "fleet.pub.pem") == 0o666 & ~umask
