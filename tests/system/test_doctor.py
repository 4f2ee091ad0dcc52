"""`edge-agent doctor` as users run it, against real brokers (or none)."""

from __future__ import annotations

from pathlib import Path

from agent.store.database import DB_NAME, Store
from testbed.mosquitto import free_port
from tests.conftest import run_cli


def _config(tmp_path: Path, model: Path, local_port: int, upstream_port: int) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "gw-doc"\n[local]\nport = {local_port}\n[upstream]\n'
        f'port = {upstream_port}\n[model]\npath = "{model}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    return config


def test_doctor_passes_a_healthy_gateway(broker, model_path: Path, tmp_path: Path):
    local, upstream = broker("local"), broker("upstream")
    done = run_cli("agent", "doctor", str(_config(tmp_path, model_path, local.port, upstream.port)))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for check in ("config", "model", "broker local", "broker upstream"):
        assert any(line.startswith("ok ") and check in line for line in lines), check
    # The machine's own disk and clock may only merit a warning; neither fails the check.
    for check in ("disk", "clock"):
        assert any(line.split()[0] in ("ok", "warn") and check in line for line in lines), check
    assert lines[-1] == "all checks passed"


def test_doctor_names_each_problem_and_its_fix(broker, tmp_path: Path):
    upstream = broker("upstream")
    missing_model = tmp_path / "nowhere.onnx"
    config = _config(tmp_path, missing_model, free_port(), upstream.port)
    done = run_cli("agent", "doctor", str(config))
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL model" in out and "nowhere.onnx" in out
    assert "FAIL broker local" in out and "fix: is mosquitto running?" in out
    assert "ok   broker upstream" in out, "the other checks still run"
    assert out.splitlines()[-1] == "2 problem(s)"


def test_doctor_reports_a_bad_config_by_field(tmp_path: Path, model_path: Path):
    config = _config(tmp_path, model_path, 1883, 1884)
    config.write_text(config.read_text() + "[forward]\nmax_inflight = 0\n")
    done = run_cli("agent", "doctor", str(config))
    assert done.returncode == 1
    assert "FAIL config" in done.stdout and "forward.max_inflight" in done.stdout


def test_doctor_warns_about_damage_the_agent_found_in_its_database(
    broker, tmp_path: Path, model_path: Path
):
    """#13 item 10: a database the agent had to move aside (and salvage) is a warning with
    what to check, not a silent fact in the buffer's meta table."""
    local, upstream = broker("local"), broker("upstream")
    config = _config(tmp_path, model_path, local.port, upstream.port)
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"not a database" * 100)
    Store(data).close()  # the agent's own open: moves it aside, records the incident
    done = run_cli("agent", "doctor", str(config))
    assert "warn database history: 1 storage incident(s), the last corrupt" in done.stdout
    assert "fix: check the disk" in done.stdout
