"""systemd/install.sh into a staging root: the gateway install is the agent alone, and it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    _install(root, "raspberry-pi-4.toml")
    return root


def _install(root: Path, *args: str) -> None:
    env = {**os.environ, "DESTDIR": str(root), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "systemd/install.sh", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


def test_install_stages_service_config_model_and_agent_only_venv(staged: Path, tmp_path: Path):
    venv = staged / "opt/edge-agent/venv"
    assert (staged / "etc/systemd/system/edge-agent.service").is_file()
    config = staged / "etc/edge-agent/agent.toml"
    model = staged / "etc/edge-agent/models/pump_pca.onnx"
    assert config.is_file() and model.is_file()
    check = subprocess.run(
        [
            str(venv / "bin/edge-agent"),
            "check-config",
            str(config),
            "--model",
            str(model),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    probe = "import importlib.util as u; print(u.find_spec('sklearn') is None)"
    no_sklearn = subprocess.run(
        [str(venv / "bin/python"), "-c", probe], capture_output=True, text=True
    )
    assert no_sklearn.stdout.strip() == "True", "a gateway install must not pull scikit-learn"


def test_install_is_idempotent_and_keeps_an_edited_config(staged: Path):
    config = staged / "etc/edge-agent/agent.toml"
    config.write_text(config.read_text().replace("rpi-gw-001", "line-3"))
    _install(staged)
    assert "line-3" in config.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies_against_the_staged_root(staged: Path, tmp_path: Path):
    unit = (staged / "etc/systemd/system/edge-agent.service").read_text()
    # Point the commands into the staging root so that verify also checks they exist there.
    local_unit = tmp_path / "edge-agent.service"
    local_unit.write_text(unit.replace("/opt/edge-agent/", f"{staged}/opt/edge-agent/"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local_unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
