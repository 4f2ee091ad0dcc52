"""A push desk of a configured gateway, and pushes signed by the key it trusts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.envelope import load_private_key, seal, write_keypair
from agent.model.score import Scorer
from agent.pushes.compose import load_effective
from agent.pushes.desk import Desk

DEVICE = "gw-d"
BASE = f"edge/fleet/device/{DEVICE}"


@pytest.fixture
def desk(tmp_path: Path, model_path: Path):
    private, public = write_keypair(tmp_path / "keys")
    config_path = tmp_path / "agent.toml"
    config_path.write_text(
        f'[device]\nid = "{DEVICE}"\n[upstream]\nport = 1884\n[model]\npath = "{model_path}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[fleet]\ntrusted_keys = ["{public}"]\nhealth_check_s = 5\n'
    )
    config = load_effective(config_path)
    sensors = Scorer.load(model_path).manifest.sensor_names
    return Desk(config, (config_path, {}), sensors), load_private_key(private)


def signed(key, kind: str, version: int, content: bytes, target: str = f"device:{DEVICE}"):
    doc, chunks = seal(key, kind, target, version, content)
    return json.dumps(doc).encode(), doc, chunks
