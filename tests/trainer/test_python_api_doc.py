"""docs/python-api.md's Python examples run as written, in order, in one namespace, in a folder
with the `train.csv` that `edge-trainer simulate` writes (as the page says)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trainer.client
from tests.conftest import ROOT, run_cli

PAGE = ROOT / "docs" / "python-api.md"


def test_the_pages_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer.client, "_SHARED", trainer.client.Workspace())
    done = run_cli("trainer", "simulate", "--out", str(tmp_path / "train.csv"), "--rows", "2000")
    assert done.returncode == 0, done.stderr
    blocks = re.findall(r"(?ms)^```python\n(.*?)^```", PAGE.read_text())
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    assert (tmp_path / "detector.onnx").exists()
    assert namespace["results"]["predictions"].mean() == pytest.approx(0.02, abs=0.005)
