"""The supervisor's decisions, called directly: reload, switch and fall back (#14 item 3).

Real config files, the real model through ONNX Runtime and real SQLite files; no broker,
because building a pipeline does not connect and these decisions are taken before or after
a pipeline runs. The same paths with a broker and signals: tests/system/test_operations.py
(SIGHUP) and tests/system/test_push.py (pushes and rollbacks).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.pushes.state import FleetState, fleet_dir
from agent.supervisor import Supervisor

Build = Callable[..., Supervisor]


@pytest.fixture
def supervisor(tmp_path: Path, model_path: Path) -> Iterator[Build]:
    """A factory: a Supervisor on `tmp_path/agent.toml` (plus `extra` TOML); its stores are
    closed and the root logger's handlers, which it replaces, are restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    built: list[Supervisor] = []

    def build(extra: str = "") -> Supervisor:
        config = tmp_path / "agent.toml"
        config.write_text(
            # Nothing connects: the brokers' addresses are never used.
            f'[device]\nid = "gw-sup"\n[upstream]\nhost = "127.0.0.1"\n'
            f'[model]\npath = "{model_path}"\n'
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n{extra}'
        )
        built.append(Supervisor(config, {}, threading.Event(), threading.Event()))
        return built[-1]

    yield build
    for sup in built:
        sup.agent.store.close()
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on: a metrics server cannot bind it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_reload_with_nothing_changed_keeps_the_running_pipeline(supervisor: Build, capsys):
    sup = supervisor()
    running = sup.agent
    assert sup.load_again() is None
    assert "reload: config, model and secrets unchanged" in capsys.readouterr().err
    assert sup.agent is running


def test_a_reload_that_fails_its_checks_is_rejected_naming_the_field(supervisor: Build, capsys):
    sup = supervisor()
    config_file = sup.source[0]
    config_file.write_text(config_file.read_text() + "[scoring]\nbatch_max = -1\n")
    assert sup.load_again() is None
    err = capsys.readouterr().err
    assert "reload rejected, still running the previous config" in err
    assert "scoring.batch_max" in err


def test_a_reload_of_a_changed_config_returns_it(supervisor: Build, capsys):
    sup = supervisor()
    config_file = sup.source[0]
    config_file.write_text('log_format = "json"\n' + config_file.read_text())
    new = sup.load_again()
    assert new is not None and new.log_format == "json"
    assert "reload: applying the new config" in capsys.readouterr().err


def test_a_rotated_password_under_the_same_path_is_a_change(
    supervisor: Build, tmp_path: Path, capsys
):
    secret = tmp_path / "local.password"
    secret.write_text("first\n")
    sup = supervisor(f'[local]\nusername = "agent"\npassword_file = "{secret}"\n')
    assert sup.load_again() is None
    secret.write_text("second\n")
    new = sup.load_again()
    assert new is not None and new == sup.config, "the same config, a new secret"


def test_a_switch_builds_the_new_pipeline_and_remembers_the_config_before(supervisor: Build):
    sup = supervisor()
    first = sup.config
    config_file = sup.source[0]
    config_file.write_text('log_format = "json"\n' + config_file.read_text())
    new = sup.load_again()
    assert new is not None
    sup.agent.store.close()  # as the running pipeline's shutdown does before a switch
    sup.switch(new)
    assert sup.config is new and sup.agent.config is new and sup.before is first
    assert sup.load_again() is None, "what runs now is what a reload compares with"


def test_a_new_config_that_cannot_be_built_falls_back_and_rolls_back_its_push(
    supervisor: Build, taken_port: int, capsys
):
    sup = supervisor()
    first, folder = sup.config, fleet_dir(sup.config.storage.data_dir)
    pending = {"kind": "config", "version": 7, "target": "gw-sup", "process": "this one"}
    FleetState(pending=pending).save(folder)
    # Valid (it passes every check), but its metrics port is taken: it fails only to build.
    config_file = sup.source[0]
    config_file.write_text(config_file.read_text() + f'[metrics]\nlisten = "{taken_port}"\n')
    new = sup.load_again()
    assert new is not None
    sup.agent.store.close()
    sup.switch(new)
    err = capsys.readouterr().err
    assert f"the new config could not start (metrics.listen {taken_port}" in err
    assert "back to the previous one" in err
    assert sup.config is first and sup.agent.config is first and sup.before is None
    state = FleetState.load(folder)
    assert state.pending is None
    (outcome,) = state.recent_pushes
    assert outcome["status"] == "rolled_back" and outcome["version"] == 7
    assert outcome["reason"].startswith(f"could not start: metrics.listen {taken_port}")


def test_a_switch_that_fails_in_its_start_goes_back_to_the_config_before(supervisor: Build, capsys):
    sup = supervisor()
    first = sup.config
    config_file = sup.source[0]
    config_file.write_text('log_format = "json"\n' + config_file.read_text())
    new = sup.load_again()
    assert new is not None
    sup.agent.store.close()
    sup.switch(new)
    failed = sup.agent
    failed.store.close()  # as its run's shutdown does when the start fails
    assert sup.undo_failed_start(OSError("the forwarder could not start"))
    assert "could not start (the forwarder could not start)" in capsys.readouterr().err
    assert sup.config is first and sup.agent.config is first and sup.agent is not failed
    assert sup.before is None
    assert sup.load_again() is not None, "the changed file differs from what runs again"


def test_a_failure_of_the_first_pipeline_is_not_a_switch_to_undo(supervisor: Build):
    sup = supervisor()
    assert not sup.undo_failed_start(OSError("disk gone"))
    sup.agent.started = True  # a pipeline that had started: its failure ends `run` too
    sup.before = sup.config
    assert not sup.undo_failed_start(OSError("disk gone"))
