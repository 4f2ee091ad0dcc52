"""TLS and passwords on the agent's broker connections, against real mosquitto listeners with
certificates made in the test. `pytest -k tls` selects the TLS ones.

Each broker has a plain listener on `port`, which only the test's own observers use, and a
TLS listener on `tls_port`, which is the only one the agent is told about.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import TlsConfig
from agent.connection import tls_context
from testbed.mosquitto import Mosquitto, free_port
from tests.conftest import ROOT, wait_status
from tests.pki import Authority, Issued
from tests.system.test_end_to_end import _retained_status


@dataclass
class Pki:
    ca: Authority
    other_ca: Authority
    broker: Issued
    client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path / "pki", "test-ca")
    return Pki(
        ca=ca,
        other_ca=Authority(tmp_path / "pki-other", "other-ca"),
        broker=ca.issue("localhost", server=True),
        client=ca.issue("edge-agent-gw-test", server=False),
    )


@dataclass
class TlsBroker:
    broker: Mosquitto
    tls_port: int


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki):
    started: list[Mosquitto] = []

    def start(
        name: str, require_certificate: bool = False, certificate: Issued | None = None
    ) -> TlsBroker:
        certificate = certificate or pki.broker
        tls_port = free_port()
        broker = Mosquitto(
            tmp_path / name,
            tuning=(
                "max_queued_messages 100000",
                f"listener {tls_port} 127.0.0.1",
                f"cafile {pki.ca.ca_file}",
                f"certfile {certificate.cert}",
                f"keyfile {certificate.key}",
                "tls_version tlsv1.2",
                f"require_certificate {str(require_certificate).lower()}",
            ),
        ).start()
        started.append(broker)
        return TlsBroker(broker, tls_port)

    yield start
    for broker in started:
        broker.stop()


def _tls_keys(port: int, ca: Path, client: Issued | None = None) -> str:
    lines = f'host = "localhost"\nport = {port}\n[upstream.tls]\nca_file = "{ca}"\n'
    if client is not None:
        lines += f'cert_file = "{client.cert}"\nkey_file = "{client.key}"\n'
    return lines


def test_tls_agent_connects_to_a_broker_whose_certificate_it_trusts(
    broker, tls_broker, start_agent, pki: Pki
):
    local, upstream = broker("local"), tls_broker("upstream")
    agent = start_agent(
        local, upstream.broker, upstream_keys=_tls_keys(upstream.tls_port, pki.ca.ca_file)
    )
    wait_status(upstream.broker.port, "online")
    assert agent.stop() == 0


def test_tls_agent_refuses_a_broker_signed_by_another_ca(broker, tls_broker, start_agent, pki: Pki):
    local, upstream = broker("local"), tls_broker("upstream")
    agent = start_agent(
        local, upstream.broker, upstream_keys=_tls_keys(upstream.tls_port, pki.other_ca.ca_file)
    )
    agent.wait_logged("upstream connection failed: TLS to localhost")
    assert agent.logged("broker certificate rejected")
    assert _retained_status(upstream.broker.port) is None, "no status went over a bad TLS link"
    assert agent.process.poll() is None, "the agent keeps running and retrying"
    assert agent.stop() == 0


def test_tls_agent_authenticates_with_a_client_certificate(
    broker, tls_broker, start_agent, pki: Pki
):
    local, upstream = broker("local"), tls_broker("upstream", require_certificate=True)
    keys = _tls_keys(upstream.tls_port, pki.ca.ca_file, client=pki.client)
    agent = start_agent(local, upstream.broker, upstream_keys=keys)
    wait_status(upstream.broker.port, "online")
    assert agent.stop() == 0


def test_tls_agent_refuses_a_trusted_certificate_for_another_name(
    broker, tls_broker, start_agent, pki: Pki
):
    local = broker("local")
    impostor = pki.ca.issue("elsewhere.example", server=True)  # signed by the trusted CA
    upstream = tls_broker("upstream", certificate=impostor)
    agent = start_agent(
        local, upstream.broker, upstream_keys=_tls_keys(upstream.tls_port, pki.ca.ca_file)
    )
    agent.wait_logged("upstream connection failed: TLS to localhost")
    assert agent.logged("Hostname mismatch")
    assert _retained_status(upstream.broker.port) is None, "nothing went to the wrong host"
    assert agent.stop() == 0


def test_tls_context_refuses_versions_below_the_configured_minimum(pki: Pki):
    for version, floor in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        context = tls_context(TlsConfig(ca_file=pki.ca.ca_file, min_version=version))
        assert context.minimum_version == floor
        assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_tls_broker_that_requires_a_client_certificate_refuses_an_agent_without_one(
    broker, tls_broker, start_agent, pki: Pki
):
    local, upstream = broker("local"), tls_broker("upstream", require_certificate=True)
    agent = start_agent(
        local, upstream.broker, upstream_keys=_tls_keys(upstream.tls_port, pki.ca.ca_file)
    )
    # With TLS 1.3 the broker refuses after the handshake: the agent sees a disconnect.
    agent.wait_logged("upstream disconnected")
    assert _retained_status(upstream.broker.port) is None
    assert agent.stop() == 0


def test_tls_config_never_falls_back_to_plain_text(broker, start_agent, pki: Pki):
    local, upstream = broker("local"), broker("upstream")
    # A TLS config pointed at a plain MQTT listener: the handshake fails, nothing is sent.
    keys = _tls_keys(upstream.port, pki.ca.ca_file).replace('"localhost"', '"127.0.0.1"')
    agent = start_agent(local, upstream, upstream_keys=keys)
    agent.wait_logged("upstream connection failed: TLS to 127.0.0.1")
    assert _retained_status(upstream.port) is None, "nothing went in plain text"
    assert agent.stop() == 0


def test_tls_check_config_reports_a_key_that_does_not_match_the_certificate(
    tmp_path: Path, model_path: Path, pki: Pki
):
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "gw"\n[upstream]\nport = 8883\n'
        f'[upstream.tls]\nca_file = "{pki.ca.ca_file}"\n'
        f'cert_file = "{pki.client.cert}"\nkey_file = "{pki.broker.key}"\n'
        f'[model]\npath = "{model_path}"\n[storage]\ndata_dir = "{tmp_path}"\n'
    )
    done = _check_config(config)
    assert done.returncode == 2
    assert "upstream.tls: cannot load certificates" in done.stderr


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


PASSWORD = "s3cret-Pa55"


@pytest.fixture
def password_broker(tmp_path: Path):
    """A local broker that takes only user `edge-agent` with PASSWORD."""
    folder = tmp_path / "auth"
    folder.mkdir()
    passwd = folder / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "edge-agent", PASSWORD],
        check=True,
        capture_output=True,
    )
    broker = Mosquitto(
        tmp_path / "local", tuning=("allow_anonymous false", f"password_file {passwd}")
    ).start()
    yield broker
    broker.stop()


def _login(tmp_path: Path, password: str) -> str:
    secret = tmp_path / "local.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return f'username = "edge-agent"\npassword_file = "{secret}"\n'


def test_agent_logs_in_to_its_broker_with_a_password_from_a_file(
    broker, password_broker, start_agent, tmp_path: Path
):
    upstream = broker("upstream")
    agent = start_agent(password_broker, upstream, local_keys=_login(tmp_path, PASSWORD))
    # `online` comes only once the agent has subscribed to readings on its local broker.
    wait_status(upstream.port, "online")
    assert agent.stop() == 0
    assert PASSWORD not in agent.log.read_text(), "the password is never logged"
    shown = _check_config(tmp_path / "agent.toml")
    assert shown.returncode == 0, shown.stderr
    assert "password from" in shown.stdout and "(redacted)" in shown.stdout
    assert PASSWORD not in shown.stdout + shown.stderr


def test_agent_with_a_wrong_password_is_refused_and_says_so(
    broker, password_broker, start_agent, tmp_path: Path
):
    upstream = broker("upstream")
    agent = start_agent(password_broker, upstream, local_keys=_login(tmp_path, "wrong"))
    agent.wait_logged("local broker refused connection")
    assert _retained_status(upstream.port) is None, "not online without its readings"
    assert agent.stop() == 0


def test_tls_doctor_names_a_broker_certificate_it_does_not_trust(
    broker, tls_broker, pki: Pki, model_path: Path, tmp_path: Path
):
    local, upstream = broker("local"), tls_broker("upstream")
    config = tmp_path / "doctor.toml"
    config.write_text(
        f'[device]\nid = "gw"\n[local]\nport = {local.port}\n[upstream]\n'
        + _tls_keys(upstream.tls_port, pki.other_ca.ca_file)
        + f'[model]\npath = "{model_path}"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert "FAIL broker upstream" in done.stdout
    assert "broker certificate rejected" in done.stdout and "tls.ca_file" in done.stdout
    assert "ok   broker local" in done.stdout


def test_tls_plain_mqtt_to_a_tls_port_says_what_to_check(broker, tls_broker, start_agent, pki: Pki):
    local, upstream = broker("local"), tls_broker("upstream")
    # No [upstream.tls]: plain MQTT to the TLS listener, which closes the connection.
    agent = start_agent(local, upstream.broker, upstream_keys=f"port = {upstream.tls_port}\n")
    agent.wait_logged(f"127.0.0.1:{upstream.tls_port} speaks TLS")
    assert agent.logged("set [upstream.tls]")
    assert _retained_status(upstream.broker.port) is None, "nothing went in plain text"
    assert agent.process.poll() is None, "the agent keeps running and retrying"
    assert agent.stop() == 0
