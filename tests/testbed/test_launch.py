"""The testbed's launcher (testbed/launch.py), which the tests, the bench and the demo share:
the config it writes is one `edge-agent check-config` accepts, with the model and data folder
where the helpers look, and a wait that runs out fails for pytest and the bench alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testbed.launch import WaitTimedOut, configure_agent, wait_for
from testbed.mosquitto import Mosquitto
from tests.conftest import run_cli


def test_a_wait_returns_what_its_condition_found():
    answers = iter([0, None, {}, {"readings": 3}])
    assert wait_for(lambda: next(answers), 5, "stats", poll=0.001) == {"readings": 3}


def test_a_wait_that_runs_out_is_a_timeout_and_a_failed_assertion():
    with pytest.raises(WaitTimedOut, match="waiting for the impossible") as caught:
        wait_for(lambda: False, 0.05, "the impossible", poll=0.01)
    # The bench and the demo see a TimeoutError; a test may catch it as an AssertionError.
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, AssertionError)


@pytest.mark.parametrize("paths", ["absolute", "relative to the config"])
def test_the_written_config_is_valid_and_names_the_data_folder_the_helpers_read(
    tmp_path: Path, model_path: Path, paths: str
):
    # Never started: check-config connects to no broker, only their ports are written.
    local, upstream = Mosquitto(tmp_path / "local"), Mosquitto(tmp_path / "upstream")
    folder = tmp_path / "gateway"
    model, data_dir = model_path, None
    if paths != "absolute":  # as the demo writes them
        folder.mkdir()
        model, data_dir = Path("copy.onnx"), Path("data")
        shutil.copy(model_path, folder / model)
    agent = configure_agent(
        folder,
        local,
        upstream,
        model,
        "[alerts]\nfire_after = 4\n",
        data_dir,
        device="gw-launch",
        top='log_level = "warning"\n',
    )
    checked = run_cli("agent", "check-config", str(agent.config))
    assert checked.returncode == 0, checked.stderr
    assert agent.process is None, "configured, not started"
    out = checked.stdout
    assert "device gw-launch;" in out
    assert f"local 127.0.0.1:{local.port};" in out and f"upstream 127.0.0.1:{upstream.port};" in out
    assert out.rstrip().endswith(f"data {agent.data_dir.resolve()}")
    assert agent.log == folder / "agent.log"
