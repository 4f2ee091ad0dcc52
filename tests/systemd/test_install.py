"""systemd/install.sh into a staging root: the gateway install is the agent alone, and it runs."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from testbed.mosquitto import find_mosquitto, free_port
from tests.conftest import ROOT, wait_for

# Paths under the staging root, and the mode each staged file must have.
MODES = {
    "etc/systemd/system/edge-agent.service": 0o644,
    "etc/edge-agent/agent.toml": 0o644,
    "etc/edge-agent/models/pump_pca.onnx": 0o644,
    "etc/mosquitto/conf.d/edge-gateway.conf": 0o644,
    "etc/mosquitto/edge-gateway.acl": 0o640,
    "etc/mosquitto/edge-gateway.passwd": 0o640,
    "etc/edge-agent/local.password": 0o640,
    "etc/edge-agent/sensors.password": 0o600,
}
PASSWD = "etc/mosquitto/edge-gateway.passwd"
PASSWORDS = {
    "edge-agent": "etc/edge-agent/local.password",
    "sensors": "etc/edge-agent/sensors.password",
}
BROKER_FILES = {
    "mosquitto/edge-gateway.conf": "etc/mosquitto/conf.d/edge-gateway.conf",
    "mosquitto/edge-gateway.acl": "etc/mosquitto/edge-gateway.acl",
}


@pytest.fixture(scope="module")
def first_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One staging root per module (the venv takes a while), and what the install printed."""
    root = tmp_path_factory.mktemp("root")
    result = _install(root, "raspberry-pi-4.toml")
    return root, result.stdout + result.stderr


@pytest.fixture(scope="module")
def staged(first_install: tuple[Path, str]) -> Path:
    return first_install[0]


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = _run_install(root, *args)
    assert result.returncode == 0, result.stderr
    return result


def _run_install(root: Path, *args: str, src: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(root), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(src / "systemd/install.sh"), *args],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _password(root: Path, user: str) -> str:
    return (root / PASSWORDS[user]).read_text().splitlines()[0]


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Mode and content of every staged file outside the venv."""
    return {
        str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and "venv" not in p.parts
    }


def test_install_stages_service_config_model_and_agent_only_venv(staged: Path, tmp_path: Path):
    venv = staged / "opt/edge-agent/venv"
    assert (staged / "etc/systemd/system/edge-agent.service").is_file()
    config = staged / "etc/edge-agent/agent.toml"
    model = staged / "etc/edge-agent/models/pump_pca.onnx"
    assert config.is_file() and model.is_file()
    # The installed config names /etc/edge-agent/local.password: here, the staged one.
    at_root = tmp_path / "agent.toml"
    at_root.write_text(config.read_text().replace("/etc/edge-agent/", f"{config.parent}/"))
    check = subprocess.run(
        [
            str(venv / "bin/edge-agent"),
            "check-config",
            str(at_root),
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


def test_install_stages_broker_config_and_passwords_with_their_modes(staged: Path):
    modes = {path: stat.S_IMODE((staged / path).stat().st_mode) for path in MODES}
    assert modes == MODES
    for source, installed in BROKER_FILES.items():
        assert (staged / installed).read_bytes() == (ROOT / source).read_bytes()
    users = [line.split(":")[0] for line in (staged / PASSWD).read_text().splitlines()]
    assert users == ["edge-agent", "sensors"]
    agent, sensors = _password(staged, "edge-agent"), _password(staged, "sensors")
    assert len(agent) >= 32 and len(sensors) >= 32 and agent != sensors


def test_install_stages_the_manual_where_the_units_documentation_points(staged: Path):
    """`systemctl status edge-agent` shows the unit's Documentation= links: each must name a page
    the install put on the gateway, and every page of docs/ goes there."""
    unit = (staged / "etc/systemd/system/edge-agent.service").read_text()
    urls = [
        url
        for line in unit.splitlines()
        if line.startswith("Documentation=")
        for url in line.partition("=")[2].split()
    ]
    assert urls, "the unit names its documentation"
    for url in urls:
        assert url.startswith("file:///opt/edge-agent/"), url
        assert (staged / url.removeprefix("file:///")).is_file(), f"{url} is not installed"
    pages = sorted(page.name for page in (ROOT / "docs").glob("*.md"))
    assert sorted(page.name for page in (staged / "opt/edge-agent/docs").glob("*.md")) == pages


def test_install_says_where_the_passwords_are_but_never_prints_them(
    first_install: tuple[Path, str],
):
    root, output = first_install
    for user, path in PASSWORDS.items():
        assert str(root / path) in output
        assert _password(root, user) not in output


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed")
def test_staged_broker_config_admits_both_users_with_their_passwords_only(
    staged: Path, tmp_path: Path
):
    # The installed drop-in as it is, pointed at the staging root and a free port.
    conf = (staged / "etc/mosquitto/conf.d/edge-gateway.conf").read_text()
    conf = conf.replace("/etc/mosquitto/", f"{staged}/etc/mosquitto/")
    port = free_port()
    conf = re.sub(r"(?m)^listener \d+", f"listener {port}", conf)
    (tmp_path / "mosquitto.conf").write_text(f"{conf}\nuser {getpass.getuser()}\n")
    with (tmp_path / "mosquitto.log").open("wb") as log:
        broker = subprocess.Popen(
            [find_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log
        )
    try:
        assert _login(port, "edge-agent", _password(staged, "edge-agent")) == "Success"
        assert _login(port, "sensors", _password(staged, "sensors")) == "Success"
        assert _login(port, "sensors", _password(staged, "edge-agent")) != "Success"
        assert _login(port, None, None) != "Success"
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def _login(port: int, user: str | None, password: str | None) -> str:
    """The CONNACK reason from the broker on `port` for these credentials."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    reasons: list[str] = []
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        reasons.append(str(rc))
        done.set()

    client.on_connect = on_connect
    wait_for(lambda: _try_connect(client, port), timeout=10, what=f"mosquitto on port {port}")
    client.loop_start()
    try:
        wait_for(done.is_set, timeout=10, what="CONNACK")
    finally:
        client.loop_stop()
        client.disconnect()
    return reasons[0]


def _try_connect(client: mqtt.Client, port: int) -> bool:
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return False
    return True


def test_install_is_idempotent_and_keeps_an_edited_config_and_the_passwords(staged: Path):
    config = staged / "etc/edge-agent/agent.toml"
    config.write_text(config.read_text().replace("rpi-gw-001", "line-3"))
    acl = staged / "etc/mosquitto/edge-gateway.acl"
    acl.write_text(acl.read_text() + "\nuser sensors-line2\ntopic write edge/+/readings/+\n")
    before = _snapshot(staged)
    result = _install(staged)
    assert _snapshot(staged) == before
    assert "line-3" in config.read_text()
    assert "sensors-line2" in acl.read_text(), "an operator's sensor accounts are kept"
    for user in PASSWORDS:
        assert _password(staged, user) not in result.stdout + result.stderr


def test_uninstall_removes_service_venv_and_broker_drop_in_and_keeps_config_passwords(
    staged: Path, tmp_path: Path
):
    root = tmp_path / "root"
    shutil.copytree(staged, root, symlinks=True)
    (root / "var/lib/edge-agent").mkdir(parents=True)
    (root / "var/lib/edge-agent/agent.db").write_bytes(b"state")
    kept = {
        path: (root / path).read_bytes()
        for path in [
            "etc/edge-agent/agent.toml",
            "etc/edge-agent/models/pump_pca.onnx",
            "etc/edge-agent/local.password",
            "etc/edge-agent/sensors.password",
            "etc/mosquitto/edge-gateway.acl",
            PASSWD,
            "var/lib/edge-agent/agent.db",
        ]
    }
    result = _install(root, "--uninstall")
    assert not (root / "etc/systemd/system/edge-agent.service").exists()
    assert not (root / "opt/edge-agent").exists()
    assert not (root / "etc/mosquitto/conf.d/edge-gateway.conf").exists()
    assert {path: (root / path).read_bytes() for path in kept} == kept
    assert "kept" in result.stdout


def test_install_refuses_to_start_without_the_broker_acl(tmp_path: Path):
    src = tmp_path / "src"
    for part in ("systemd/install.sh", "device_configs/raspberry-pi-4.toml"):
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, src / part)
    (src / "mosquitto").mkdir()
    shutil.copy(ROOT / "mosquitto/edge-gateway.conf", src / "mosquitto")
    root = tmp_path / "root"
    result = _run_install(root, src=src)
    assert result.returncode == 2
    assert "install: missing mosquitto/edge-gateway.acl" in result.stderr
    assert not root.exists(), "nothing is staged before the check"


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
