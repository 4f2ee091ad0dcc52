"""The upstream MQTT session: one paho client, its connection, retained status and fleet pushes.

Connects in paho's own thread and reconnects there; logs why a connection failed or closed
(a refusal, a TLS problem, a close before the CONNACK). The forwarder publishes the outbox over
this session (`forward.Forwarder`), and its thread is the one that sends the status.

Retained status "online" once connected upstream and subscribed to readings (so "online" means
consuming), refreshed with buffer figures every `StatusReport.interval_s`; "offline" as Last
Will and on a clean stop.

The same connection takes fleet pushes: it subscribes to their envelope topics, and to the chunk
topics the agent asks for (`follow`) once an envelope is verified; its CONNECT asks the broker
for no packet over `MAX_MESSAGE_BYTES`, since anyone may publish there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import BrokerConfig
from agent.connection import ClosedEarly, Explained, make_client
from agent.envelope import MAX_MESSAGE_BYTES
from agent.logs import Throttle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusReport:
    """The retained status: its topic, the document (without `state` and `ts`, read when it
    is sent) and how often it is refreshed."""

    topic: str
    document: Callable[[], dict[str, object]]
    interval_s: float


@dataclass(frozen=True)
class PushTopics:
    """Fleet push topics, renewed on every connect; their messages go to `on_message`, in
    paho's thread."""

    subscriptions: list[str] = field(default_factory=list)
    on_message: Callable[[str, bytes], None] | None = None


class Upstream:
    """One session upstream for alerts, status and pushes: a gateway holds one connection (and
    one Last Will) there, whatever travels over it."""

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        report: StatusReport,
        pushes: PushTopics | None = None,
    ) -> None:
        self.broker = broker
        self.report = report
        self.client = make_client(broker, client_id)
        self.client.will_set(report.topic, self._status_payload("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        pushes = pushes or PushTopics()
        self.subscriptions = pushes.subscriptions
        self._followed: set[str] = set()  # see `follow`
        self._follow_lock = threading.Lock()
        self._answered = False  # the broker answered this connection's CONNECT
        if pushes.on_message is not None:
            on_message = pushes.on_message
            self.client.on_message = lambda _c, _u, msg: on_message(msg.topic, msg.payload)
        self.connected = threading.Event()
        self._source_ready = threading.Event()
        self._status_due = 0.0  # monotonic time of the next status; 0: as soon as possible
        self._warn = Throttle(log)
        self._stopping = threading.Event()
        # Called in paho's thread after each successful connect (Home Assistant discovery).
        self.connect_hooks: list[Callable[[], None]] = []
        # The forwarder's loop sends the status: woken when it is due (see `listen`).
        self._wake: Callable[[], None] = lambda: None

    def listen(self, on_publish: Callable[[int, bool], None], wake: Callable[[], None]) -> None:
        """The forwarder's hooks: `on_publish(mid, ok)` for each PUBACK (in paho's thread,
        holding paho's message lock, so it must only queue), `wake` when a status is due."""
        self.client.on_publish = lambda _c, _u, mid, rc, _p: on_publish(mid, not rc.is_failure)
        self._wake = wake

    def start(self) -> None:
        # Anyone may publish on the push topics: a message larger than any push chunk is
        # dropped by the broker, never read into memory (MQTT 5 Maximum Packet Size; issue #13).
        connect = Properties(PacketTypes.CONNECT)
        connect.MaximumPacketSize = MAX_MESSAGE_BYTES
        self.client.connect_async(
            self.broker.host, self.broker.port, self.broker.keepalive, properties=connect
        )
        self.client.loop_start()

    def follow(self, topics: set[str]) -> None:
        """Be subscribed to exactly these topics beside `subscriptions`: the chunks of a
        verified push, asked for a few at a time; renewed on every connect."""
        with self._follow_lock:
            new, gone = topics - self._followed, self._followed - topics
            self._followed = set(topics)
        # Not connected: paho refuses, and the next connect subscribes to them. Gone first: a
        # message of a new topic then says the broker has dropped the old ones (packets of one
        # client are handled in order).
        if gone:
            self.client.unsubscribe(sorted(gone))
        if new:
            self.client.subscribe([(topic, 1) for topic in sorted(new)])

    def resubscribe(self) -> None:
        """Subscribe again: the broker sends what is retained there again (MQTT 5 retain
        handling 0), pushes dropped from a full push queue included."""
        if self.connected.is_set():
            self._subscribe_all()

    def _subscribe_all(self) -> None:
        """The push topics and the chunk topics followed now (on every connect, too)."""
        with self._follow_lock:
            topics = [*self.subscriptions, *sorted(self._followed)]
        if topics:
            self.client.subscribe([(topic, 1) for topic in topics])

    def status_changed(self) -> None:
        """Something the status reports changed: send it now rather than at the next refresh."""
        self._status_due = 0.0
        self._wake()

    def source_ready(self) -> None:
        """The agent is subscribed to readings: `online` may now be announced."""
        self._source_ready.set()
        self._status_due = 0.0
        self._wake()

    def refresh_status(self) -> None:
        """In the forwarder's thread, while connected: send `online` when it is due."""
        now = time.monotonic()
        if self._source_ready.is_set() and now >= self._status_due:
            self._status_due = now + self.report.interval_s
            doc = self.report.document()
            self.client.publish(self.report.topic, self._status_payload("online", doc), 1, True)
            # The Last Will goes with the next CONNECT: keep it as current as the status, so
            # that a crash reports the last push and figures, not those of the start.
            offline = self._status_payload("offline", doc)
            self.client.will_set(self.report.topic, offline, qos=1, retain=True)

    def publish_retained(self, topic: str, payload: bytes) -> bool:
        """QoS 1, retained, while connected; False when not sent (not connected, or paho
        refused): the caller sends it again later."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=True)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stopping(self) -> None:
        """A stop has begun: a disconnect from now on is expected, not warned about."""
        self._stopping.set()

    def stop(self, final: bool) -> None:
        """Say offline (when `final`; not when another session takes over, as on a reload)
        and disconnect."""
        self._stopping.set()
        if final and self.connected.is_set():
            info = self.client.publish(self.report.topic, self._status_payload("offline"), 1, True)
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    def _status_payload(self, state: str, doc: dict[str, object] | None = None) -> bytes:
        doc = doc or self.report.document()
        return json.dumps({**doc, "state": state, "ts": time.time()}).encode()

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self._answered = True
        if rc.is_failure:
            log.warning("upstream refused connection: %s", rc)
            return
        log.info("upstream connected host=%s port=%s", self.broker.host, self.broker.port)
        self._subscribe_all()
        self.connected.set()
        for hook in self.connect_hooks:
            hook()
        self.status_changed()

    def _on_connect_fail(self, _c: object, _u: object) -> None:
        self._warn.warning("connect", "upstream connection failed: %s", Explained(self.broker))

    def _on_disconnect(
        self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        was_connected, answered = self.connected.is_set(), self._answered
        self.connected.clear()
        self._answered = False
        if self._stopping.is_set():
            return
        if was_connected:
            log.warning("upstream disconnected (%s); alerts stay in the outbox", rc)
            return
        if answered:  # a refusal, already logged
            return
        # Closed before the CONNACK: paho only knows "Unspecified error" (issue #13).
        why = ClosedEarly(self.broker, "upstream")
        self._warn.warning("closed", "upstream disconnected (%s) before its CONNACK: %s", rc, why)
