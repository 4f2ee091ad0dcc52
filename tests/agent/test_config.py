"""Config validation through the real CLI; docs/configuration.md kept in step with the schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.config_doc import render_reference, render_stream_reference
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


def test_docs_config_reference_matches_the_schema():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert render_reference() in page, (
        "run `python -m agent.config_doc` and paste it into docs/configuration.md"
    )


def test_docs_stream_reference_matches_the_manifest_schema():
    page = (ROOT / "docs" / "model-file.md").read_text()
    assert render_stream_reference() in page, (
        "run `python -m agent.config_doc --stream` and paste it into docs/model-file.md"
    )


def _config_with(tmp_path: Path, model_path: Path, extra: str) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "g"\n[upstream]\nport = 1\n[model]\npath = "{model_path}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n{extra}'
    )
    return config


def test_levels_that_clash_with_the_model_fail_check_config_and_run_alike(tmp_path, model_path):
    """One validation: what `check-config` accepts `run` can start (the unit's pre-start
    check), including the model's levels merged with `[alerts.levels]`."""
    config = _config_with(tmp_path, model_path, "[alerts.levels]\ncritical = 0.0\n")
    checked = run_cli("agent", "check-config", str(config))
    assert checked.returncode == 2, checked.stdout
    assert "alerts.levels: critical = 0.0 with the model's levels" in checked.stderr
    ran = run_cli("agent", "run", "--config", str(config))
    assert ran.returncode == 2, ran.stderr
    assert "alerts.levels: critical = 0.0" in ran.stderr and "Traceback" not in ran.stderr


def test_the_metrics_textfile_may_not_be_inside_the_data_dir(tmp_path, model_path):
    for textfile in (tmp_path / "data" / "agent.db", tmp_path / "data" / "sub" / "m.prom"):
        config = _config_with(tmp_path, model_path, f'[metrics]\ntextfile = "{textfile}"\n')
        result = run_cli("agent", "check-config", str(config))
        assert result.returncode == 2, result.stdout
        assert "metrics.textfile" in result.stderr and "inside storage.data_dir" in result.stderr
    config = _config_with(tmp_path, model_path, f'[metrics]\ntextfile = "{tmp_path / "m.prom"}"\n')
    assert run_cli("agent", "check-config", str(config)).returncode == 0


def test_the_metrics_textfile_may_not_be_a_file_the_agent_reads(tmp_path, model_path):
    """A textfile at the model or the config file itself passed `check-config`; the agent then
    replaced it with Prometheus text and the next start failed."""
    config = tmp_path / "agent.toml"
    for target in (model_path, config):
        _config_with(tmp_path, model_path, f'[metrics]\ntextfile = "{target}"\n')
        result = run_cli("agent", "check-config", str(config))
        assert result.returncode == 2, result.stdout
        assert "metrics.textfile" in result.stderr and "a file the agent reads" in result.stderr


def test_a_status_interval_that_would_flood_upstream_is_refused(tmp_path, model_path):
    """`status_interval_s = 1e-6` was accepted, locally or pushed: the agent then sent about
    2,000 retained status messages a second upstream (and rewrote its metrics textfile as
    often). A push goes through the same schema."""
    config = _config_with(tmp_path, model_path, "[forward]\nstatus_interval_s = 1e-6\n")
    checked = run_cli("agent", "check-config", str(config))
    assert checked.returncode == 2, checked.stdout
    assert "forward.status_interval_s" in checked.stderr


def test_what_stops_run_stops_check_config_first(tmp_path, model_path):
    """The unit's pre-start check must fail where `run` would: a trusted key that does not
    load and a data folder that is a file (run died with a FileExistsError traceback) passed
    `check-config`; an `agent.db` that is a folder too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "data" / "agent.db").mkdir(parents=True)
    cases = {
        f'[fleet]\ntrusted_keys = ["{tmp_path / "missing.pem"}"]\n': "fleet.trusted_keys",
        f'[storage]\ndata_dir = "{blocker}"\n': "is not a folder",
        f'[storage]\ndata_dir = "{blocker / "sub"}"\n': "is not a folder",
        "": "is a folder, not a database",
    }
    for extra, problem in cases.items():
        config = _config_with(tmp_path, model_path, "")
        text = config.read_text()
        if extra.startswith("[storage]"):
            text = text.split("[storage]")[0]
        config.write_text(text + extra)
        for command in (("check-config",), ("run", "--config")):
            done = run_cli("agent", *command, str(config))
            assert done.returncode == 2, (extra, command, done.stderr)
            assert problem in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_expiry_intervals_mqtt_cannot_send_are_refused(tmp_path, model_path):
    """`alert_ttl_s = 5000000000` passed `check-config` (and a push's checks); at the first
    alert the forwarder died packing the message expiry (a four-byte integer) and the agent
    exited 1, again at every start while the alert was pending."""
    for extra, field in (
        ("[forward]\nalert_ttl_s = 5000000000\n", "forward.alert_ttl_s"),
        ("[local]\nsession_expiry_s = 5000000000\n", "local.session_expiry_s"),
    ):
        config = _config_with(tmp_path, model_path, extra)
        checked = run_cli("agent", "check-config", str(config))
        assert checked.returncode == 2 and field in checked.stderr, checked.stderr


def test_sparkplug_without_protobuf_fails_check_config_with_the_extra_named(tmp_path, model_path):
    """A gateway installed without the `sparkplug` extra: check-config says what to install
    (protobuf hidden from the subprocess, as if it were not installed)."""
    source = '[[ingest.sources]]\nname = "plc"\ntopic = "spBv1.0/p/#"\nformat = "sparkplug_b"\n'
    config = _config_with(tmp_path, model_path, source)
    hide = (
        "import sys; sys.modules['google.protobuf'] = None; "
        "from agent.__main__ import main; sys.argv[0] = 'edge-agent'; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide, "check-config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode != 0
    assert "sparkplug" in result.stderr and "edge-anomaly-agent[sparkplug]" in result.stderr
    assert run_cli("agent", "check-config", str(config)).returncode == 0


def _toml_blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return re.findall(r"(?ms)^```toml\n(.*?)^```", text)


def test_the_sparkplug_and_home_assistant_pages_configs_pass_check_config(tmp_path, model_path):
    """The copy-paste configs of docs/sparkplug.md and docs/home-assistant.md, as printed."""
    blocks = _toml_blocks("sparkplug.md") + _toml_blocks("home-assistant.md")
    assert len(blocks) == 2
    config = _config_with(tmp_path, model_path, "\n".join(blocks))
    result = run_cli("agent", "check-config", str(config))
    assert result.returncode == 0, result.stderr
