"""MQTT clients for the agent's two brokers, with TLS and credentials from the config.

A `tls` section means TLS or no connection: the context checks the broker's certificate
against the configured CAs and its name against `host`, and refuses TLS below 1.2. Passwords
come from a file or an environment variable at connect time; they are never logged, and the
config only ever holds where they are.

paho's reconnect loop knows only *that* a connection failed; `transport_problem` says why
(refused, unreachable, certificate not trusted, wrong name), for the log and `doctor`. A broker
that closes the connection before its CONNACK leaves paho with "Unspecified error";
`ClosedEarly` says what to check, first whether plain MQTT went to a port that speaks TLS
(issue #13).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import BrokerConfig, ConfigError, TlsConfig

_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def make_client(broker: BrokerConfig, default_id: str, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT 5 client for `broker`, credentials and TLS set, not yet connected."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=broker.client_id or default_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if broker.username:
        client.username_pw_set(broker.username, password(broker))
    if broker.tls is not None:
        client.tls_set_context(tls_context(broker.tls))
    return client


def password(broker: BrokerConfig) -> str | None:
    """The broker password from its file or environment variable; ConfigError names which."""
    if broker.password_file is not None:
        try:
            lines = Path(broker.password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"password_file {broker.password_file}: cannot read: {exc}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"password_file {broker.password_file}: empty")
        return lines[0]
    if broker.password_env is not None:
        value = os.environ.get(broker.password_env)
        if not value:
            raise ConfigError(f"password_env: environment variable {broker.password_env} unset")
        return value
    return None


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Certificate and name checked (the defaults of a client context), TLS >= min_version."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificates: {exc}") from None
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    return context


def transport_problem(broker: BrokerConfig, timeout: float = 5.0) -> str | None:
    """Why a TCP (and TLS) connection to the broker fails, in words; None when it works."""
    where = f"{broker.host}:{broker.port}"
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
    except OSError as exc:
        return f"cannot reach {where}: {exc.strerror or exc}"
    try:
        if broker.tls is not None:
            try:
                sock = tls_context(broker.tls).wrap_socket(sock, server_hostname=broker.host)
            except ssl.SSLCertVerificationError as exc:
                return f"TLS to {where}: broker certificate rejected: {exc.verify_message}"
            except (ssl.SSLError, OSError) as exc:
                return f"TLS to {where}: handshake failed: {getattr(exc, 'reason', None) or exc}"
    finally:
        sock.close()
    return None


def speaks_tls(broker: BrokerConfig, timeout: float = 5.0) -> bool:
    """Whether the broker's port completes a TLS handshake (certificate not checked: this only
    asks which protocol the port speaks, and nothing is sent after the handshake)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((broker.host, broker.port), timeout=timeout) as sock:
            probe.wrap_socket(sock, server_hostname=broker.host).close()
    except (OSError, ssl.SSLError):
        return False
    return True


def mqtt_problem(broker: BrokerConfig, client_id: str, timeout: float = 5.0) -> str | None:
    """Why the broker does not accept an MQTT session from us (transport, credentials); None
    when it does. Connects with `client_id`, which must not be the agent's own (that would
    take over the agent's session)."""
    problem = transport_problem(broker, timeout)
    if problem is not None:
        return problem
    client = make_client(broker.model_copy(update={"client_id": client_id}), client_id)
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            outcome.append(f"{broker.host}:{broker.port} refused the connection: {rc}")
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return f"{broker.host}:{broker.port}: {exc}"
    client.loop_start()
    try:
        if not answered.wait(timeout):
            return f"{broker.host}:{broker.port} did not answer MQTT CONNECT within {timeout:.0f}s"
        return outcome[0] if outcome else None
    finally:
        client.disconnect()
        client.loop_stop()


class Explained:
    """`transport_problem`, worked out only when formatted: a rate-limited log line that is
    not written costs no extra connection."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.broker = broker

    def __str__(self) -> str:
        try:
            return transport_problem(self.broker) or "the broker closed the connection"
        except ConfigError as exc:
            return str(exc)


class ClosedEarly:
    """Why a broker closed the connection before accepting the MQTT session, worked out only
    when formatted (like `Explained`). `section` names the config section to fix."""

    def __init__(self, broker: BrokerConfig, section: str) -> None:
        self.broker = broker
        self.section = section

    def __str__(self) -> str:
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            problem = transport_problem(self.broker)
        except ConfigError as exc:
            return str(exc)
        if problem is not None:
            return problem
        if self.broker.tls is None and speaks_tls(self.broker):
            return (
                f"{where} speaks TLS and the agent sent plain MQTT: set [{self.section}.tls] "
                f"(ca_file) for this port, or use the broker's plain MQTT port"
            )
        return (
            f"{where} closed the connection before accepting the MQTT session: check the "
            f"broker's log (client id, credentials, client certificate, connection limits)"
        )
