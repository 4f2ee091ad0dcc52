"""The shipped gateway mosquitto config and ACL, on real mosquitto: it accepts them, only
`sensors` may publish readings and only `edge-agent` may read them, and the config keeps what
the default queue limits drop for an agent that is away.

Each test runs the shipped settings with the listener moved to a free loopback port and the
password file and ACL moved into the test's folder. The test ACL is the shipped one plus a
test-only user, `observer`, who may read everything: a forbidden message that got through would
reach it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from testbed.mosquitto import Mosquitto
from tests.conftest import ROOT, wait_for

SHIPPED = ROOT / "mosquitto" / "edge-gateway.conf"
SHIPPED_ACL = ROOT / "mosquitto" / "edge-gateway.acl"
INSTALLED_PASSWORDS = "/etc/mosquitto/edge-gateway.passwd"
INSTALLED_ACL = "/etc/mosquitto/edge-gateway.acl"
SECURITY = {"allow_anonymous", "password_file", "acl_file", "per_listener_settings"}
OBSERVER = "observer"
PASSWORDS = {"sensors": "sensor-secret", "edge-agent": "agent-secret", OBSERVER: "observer-pw"}
NOT_AUTHORISED = 0x87
MESSAGES = 3000
READING = "edge/gw/readings/pump-1"
MARKER = "edge/gw/readings/marker"


def _settings() -> list[str]:
    lines = [line.split("#")[0].strip() for line in SHIPPED.read_text().splitlines()]
    return [line for line in lines if line]


def _key(setting: str) -> str:
    return setting.split()[0]


def _for_test(folder: Path) -> tuple[str, ...]:
    """The shipped settings except the listener (the test broker has its own on a free port),
    with the password file and ACL written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    passwords, acl = folder / "edge-gateway.passwd", folder / "edge-gateway.acl"
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [tool, "-b", *create, str(passwords), user, password], check=True, capture_output=True
        )
    acl.write_text(
        SHIPPED_ACL.read_text()
        + f"\n# Test only.\nuser {OBSERVER}\ntopic read #\ntopic read $SYS/#\n"
    )
    rewritten = {INSTALLED_PASSWORDS: str(passwords), INSTALLED_ACL: str(acl)}
    settings = []
    for s in _settings():
        if _key(s) == "listener":
            continue
        for installed, here in rewritten.items():
            s = s.replace(installed, here)
        settings.append(s)
    return tuple(settings)


class Session:
    """An MQTT 5 client logged in as `user` that records what it receives and its acks."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None = None,
        client_id: str = "",
        clean_start: bool = True,
    ) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, password or PASSWORDS[user])
        self.connack: int | None = None
        self.received: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}  # message id -> PUBACK reason code
        self.subacks: dict[int, list[int]] = {}  # message id -> SUBACK reason codes
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        properties = None
        if not clean_start:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=properties)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, 10, f"CONNACK for {user}")

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if self.connack is None:  # paho retries a refused login; the first answer is the one
            self.connack = rc.value

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, msg.payload))

    def _on_publish(self, _c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        with self._lock:
            self.acks[mid] = rc.value

    def _on_subscribe(self, _c: object, _u: object, mid: int, codes: list, _p: object) -> None:
        with self._lock:
            self.subacks[mid] = [c.value for c in codes]

    def topics(self) -> list[str]:
        with self._lock:
            return [topic for topic, _ in self.received]

    def subscribe(self, *topics: str) -> list[int]:
        """SUBSCRIBE at QoS 1; the SUBACK's reason codes (0-2: granted QoS)."""
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        return wait_for(lambda: self.subacks.get(mid), 10, f"SUBACK for {topics}")

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        """PUBLISH; at QoS 1 the PUBACK's reason code (0 success), at QoS 0 once it is sent."""
        mid = self.client.publish(topic, payload, qos).mid
        wait_for(lambda: mid in self.acks, 10, f"{topic} sent (QoS {qos})")
        return self.acks[mid]

    def wait_received(self, topic: str, timeout: float = 10) -> None:
        wait_for(lambda: topic in self.topics(), timeout, f"{topic} delivered")

    def close(self) -> None:
        if self.connack == 0:
            self.client.disconnect()
        self.client.loop_stop()


class Gateway:
    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.sessions: list[Session] = []

    def login(self, user: str | None, password: str | None = None, **kwargs: object) -> Session:
        session = Session(self.broker.port, user, password, **kwargs)
        self.sessions.append(session)
        if session.connack != 0:
            session.close()  # or paho tries again
        return session

    def log(self) -> str:
        return (self.broker.workdir / "mosquitto.log").read_text()

    def session(self, user: str, **kwargs: object) -> Session:
        session = self.login(user, **kwargs)
        assert session.connack == 0, f"{user} could not log in: reason code {session.connack}"
        return session


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    folder = tmp_path / "gateway"
    gw = Gateway(Mosquitto(folder, tuning=_for_test(folder)).start())
    try:
        yield gw
    finally:
        for session in gw.sessions:
            session.close()
        gw.broker.stop()


def test_the_shipped_config_listens_on_loopback_only_and_requires_a_login(gateway: Gateway):
    settings = _settings()
    assert [s for s in settings if _key(s) == "listener"] == ["listener 1883 127.0.0.1"]
    assert "allow_anonymous false" in settings
    assert f"password_file {INSTALLED_PASSWORDS}" in settings
    assert f"acl_file {INSTALLED_ACL}" in settings
    gateway.session("sensors")
    gateway.session("edge-agent")
    assert "Error" not in gateway.log()


def test_anonymous_clients_and_wrong_passwords_are_refused(gateway: Gateway):
    refused = {
        "anonymous": gateway.login(None).connack,
        "wrong password": gateway.login("sensors", "not-the-password").connack,
        "another user's password": gateway.login("edge-agent", PASSWORDS["sensors"]).connack,
        "unknown user": gateway.login("intruder", "secret").connack,
    }
    # mosquitto 2.0.11 answers all of these with 0x87 "not authorised" (not 0x86 "bad user name
    # or password"), and closes the connection.
    assert refused == dict.fromkeys(refused, NOT_AUTHORISED)
    wait_for(
        lambda: gateway.log().count("disconnected, not authorised") == len(refused),
        10,
        "the refusals in the broker's log",
    )


def test_sensors_publish_readings_that_the_agent_receives(gateway: Gateway):
    agent = gateway.session("edge-agent", client_id="edge-agent-gw", clean_start=False)
    assert agent.subscribe("edge/gw/readings/+") == [1]
    sensors = gateway.session("sensors")
    assert sensors.publish(READING, b'{"ts": 1, "flow": 2.5}', qos=1) == 0
    assert sensors.publish("edge/gw/readings/pump-2", b'{"ts": 1, "flow": 3.0}', qos=0) == 0
    wait_for(lambda: len(agent.received) == 2, 10, "both readings at the agent")
    assert agent.received == [
        (READING, b'{"ts": 1, "flow": 2.5}'),
        ("edge/gw/readings/pump-2", b'{"ts": 1, "flow": 3.0}'),
    ]


def test_sensors_cannot_read_readings_or_sys(gateway: Gateway):
    observer = gateway.session(OBSERVER)
    observer.subscribe("$SYS/#")
    observer.wait_received("$SYS/broker/version")  # retained: a reader of $SYS/# gets it
    agent = gateway.session("edge-agent")
    agent.subscribe("edge/gw/readings/+")
    reader = gateway.session("sensors")
    # mosquitto 2.0's ACL is not consulted on SUBSCRIBE: the SUBACK grants every subscription,
    # and `read` is checked on each message it would deliver.
    assert reader.subscribe("edge/gw/readings/+", "#", "$SYS/#") == [1, 1, 1]
    gateway.session("sensors").publish(READING)
    agent.wait_received(READING)
    # The reading was routed (the agent has it), so anything for `reader` is queued on its
    # connection already; a PUBACK on that connection comes after it.
    assert reader.publish(MARKER) == 0
    agent.wait_received(MARKER)
    assert reader.received == []


FORBIDDEN = [
    "edge/gw/alerts/x",
    "edge/gw/status",
    "edge/gw/readings",  # too short
    "edge/gw/readings/pump-1/extra",  # too long
    "other/gw/readings/pump-1",
    "readings",
]


def test_sensors_cannot_publish_anything_but_readings(gateway: Gateway):
    observer = gateway.session(OBSERVER)
    observer.subscribe("#")
    sensors = gateway.session("sensors")
    for topic in FORBIDDEN:
        sensors.publish(topic, qos=0)  # dropped silently
        # At QoS 1 the message is dropped too, and the PUBACK says why.
        assert sensors.publish(topic, qos=1) == NOT_AUTHORISED, topic
    # One connection's messages reach a subscriber in order: the marker comes after anything
    # that got through.
    assert sensors.publish(MARKER) == 0
    observer.wait_received(MARKER)
    assert observer.topics() == [MARKER]


def test_the_agent_cannot_publish(gateway: Gateway):
    observer = gateway.session(OBSERVER)
    observer.subscribe("#")
    reader = gateway.session("edge-agent", client_id="edge-agent-reader")
    reader.subscribe("edge/gw/readings/+")
    agent = gateway.session("edge-agent")
    for topic in [READING, "edge/gw/status", "edge/gw/alerts/x"]:
        agent.publish(topic, qos=0)
        assert agent.publish(topic, qos=1) == NOT_AUTHORISED, topic
    # The last PUBACK means the broker has dealt with all of the agent's messages; the marker
    # is published after that, so anything of the agent's that got through would precede it.
    assert gateway.session("sensors").publish(MARKER) == 0
    reader.wait_received(MARKER)
    observer.wait_received(MARKER)
    assert reader.topics() == [MARKER]
    assert observer.topics() == [MARKER]


def _received_after_absence(broker: Mosquitto) -> int:
    """QoS 1 readings the agent's persistent session gets after being away while sent."""
    away = Session(broker.port, "edge-agent", client_id="agent", clean_start=False)
    try:
        assert away.subscribe("edge/gw/readings/+") == [1]
    finally:
        away.close()
    log = broker.workdir / "mosquitto.log"
    # Readings sent before the broker has seen the agent go would be delivered, not queued.
    wait_for(lambda: "Client agent disconnected." in log.read_text(), 10, "the agent gone")
    sensors = Session(broker.port, "sensors")
    try:
        for i in range(MESSAGES):
            sensors.client.publish(READING, str(i), qos=1)
        wait_for(lambda: len(sensors.acks) >= MESSAGES, 60, f"{MESSAGES} PUBACKs")
        assert set(sensors.acks.values()) == {0}
    finally:
        sensors.close()
    # What the broker kept is sent right after CONNACK: all of it, or it stops short.
    back = Session(broker.port, "edge-agent", client_id="agent", clean_start=False)
    try:
        wait_for(lambda: len(back.received) >= 1000, 30, "the queued messages")
        _wait_quiet(lambda: len(back.received), quiet_s=0.5, timeout=30)
    finally:
        back.close()
    return len(back.received)


def _wait_quiet(count: Callable[[], int], quiet_s: float, timeout: float) -> None:
    """Until `count` has not changed for `quiet_s`: the only way to see a stream has ended
    when its end is what is being measured."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError(f"still receiving after {timeout}s")


def test_the_default_config_drops_queued_readings_and_the_shipped_one_keeps_them(tmp_path: Path):
    shipped = _for_test(tmp_path / "shipped")
    # The same login and ACL, with mosquitto's default queue limits.
    security = tuple(s for s in _for_test(tmp_path / "default") if _key(s) in SECURITY)
    default = Mosquitto(tmp_path / "default", tuning=security).start()
    try:
        kept_by_default = _received_after_absence(default)
    finally:
        default.stop()
    broker = Mosquitto(tmp_path / "shipped", persistence=True, tuning=shipped).start()
    try:
        kept_by_shipped = _received_after_absence(broker)
    finally:
        broker.stop()
    assert kept_by_default < MESSAGES, "mosquitto's default queue limit drops messages"
    assert kept_by_shipped == MESSAGES
