"""A gateway install for real: a fresh venv, `pip install .` of this checkout with no extras,
as docs/install.md shows (issue 17, items 1, 2 and 6).

About a minute with the package index at hand (most of it ONNX Runtime and numpy), so it runs in
the ordinary suite. It needs the index: `-m "not install"` leaves it out, and
EDGE_TESTS_OFFLINE=1 skips it with that reason. The quick-loop twin that only hides the extra's
modules is tests/trainer/test_entry.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.checkout import copy_checkout
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(
        os.environ.get("EDGE_TESTS_OFFLINE") == "1",
        reason="EDGE_TESTS_OFFLINE=1: a fresh install needs the package index",
    ),
]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
INSTALL_HINT = "pip install 'edge-anomaly-agent[trainer]'"


@dataclass(frozen=True)
class Gateway:
    bin: Path
    pip_output: str
    cwd: Path  # not the checkout: nothing may be imported from it


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    root = tmp_path_factory.mktemp("gateway")
    source = copy_checkout(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-v", str(source)],
        capture_output=True, text=True, timeout=900, cwd=root,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return Gateway(venv / "bin", output, root)


def _run(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(gateway.bin / args[0]), *args[1:]],
        capture_output=True, text=True, timeout=120, cwd=gateway.cwd, env=env,
    )  # fmt: skip


def test_the_build_warns_of_nothing_deprecated(gateway: Gateway) -> None:
    assert "DeprecationWarning" not in gateway.pip_output


@pytest.mark.parametrize("script", ["edge-agent", "edge-trainer", "edge-fleet"])
def test_version_comes_from_the_installed_metadata(gateway: Gateway, script: str) -> None:
    done = _run(gateway, script, "--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{script} {VERSION}\n", "")


def test_edge_trainer_names_the_extra_to_install(gateway: Gateway) -> None:
    assert _run(gateway, "python", "-c", "import onnx").returncode != 0, "no extra installed"
    done = _run(gateway, "edge-trainer", "train", "data.csv", "--out", "m.onnx")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and INSTALL_HINT in done.stderr, done.stderr

    helped = _run(gateway, "edge-trainer", "--help")
    assert helped.returncode == 0 and helped.stderr == ""
    assert helped.stdout.startswith("usage: edge-trainer") and INSTALL_HINT in helped.stdout


def test_the_agent_scores_on_a_gateway_install(gateway: Gateway, tmp_path: Path) -> None:
    """The agent's own path needs no extra (what `pip install .` is for)."""
    data = tmp_path / "live.csv"
    sensors = ["flow_lpm", "pressure_bar", "current_a", "temperature_c", "vibration_mms"]
    rows = [",".join(["timestamp", *sensors])]
    rows += [f"2026-01-01T00:{i:02d}:00Z,50,3,12,40,{1 + i % 3}" for i in range(30)]
    data.write_text("\n".join(rows) + "\n")
    done = _run(gateway, "edge-agent", "score", str(ROOT / "models" / "pump_pca.onnx"), str(data))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 31  # a header and a line per row
