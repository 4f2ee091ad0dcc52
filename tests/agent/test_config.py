"""Config validation through the real CLI, and the README reference kept in step with the schema."""

from __future__ import annotations

from pathlib import Path

from agent.config_doc import render_reference
from tests.conftest import ROOT, run_cli


def test_shipped_default_config_is_valid():
    result = run_cli("agent", "check-config", "device_configs/default.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: device gw-001; model pump_pca")


def test_every_shipped_profile_parses(tmp_path, model_path):
    # A gateway's /etc/edge-agent, here: the profiles name the agent's broker password there.
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "local.password").write_text("not-a-real-password\n")
    for profile in sorted((ROOT / "device_configs").glob("*.toml")):
        staged = tmp_path / profile.name
        staged.write_text(profile.read_text().replace("/etc/edge-agent/", f"{etc}/"))
        result = run_cli(
            "agent",
            "check-config",
            str(staged),
            "--model",
            str(model_path),
            "--data-dir",
            str(tmp_path),
        )
        assert result.returncode == 0, f"{profile.name}: {result.stderr}"


def test_check_config_names_every_bad_field(tmp_path: Path, model_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        '[device]\nid = "gw/1"\n[local]\nport = 70000\n[upstream]\nhost = "x"\ncolour = "red"\n'
        f'[model]\npath = "{model_path}"\n[storage]\ndata_dir = "d"\n[alerts]\nfire_after = 0\n'
    )
    result = run_cli("agent", "check-config", str(config))
    assert result.returncode == 2
    for field in ("device.id", "local.port", "upstream.colour", "alerts.fire_after"):
        assert field in result.stderr, field
    assert result.stdout == ""


def test_check_config_reports_a_missing_model(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[device]\nid = "g"\n[upstream]\n[model]\npath = "nope.onnx"\n[storage]\ndata_dir = "d"\n'
    )
    result = run_cli("agent", "check-config", str(config))
    assert result.returncode == 2 and "model.path" in result.stderr and "nope.onnx" in result.stderr


def test_readme_config_reference_matches_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert render_reference() in readme, "run `python -m agent.config_doc` and paste into README"
