"""Forward stage: the outbox to the upstream broker at QoS 1, marked delivered on PUBACK only.

One thread owns publishing, acknowledgement and status: paho calls `on_publish` while holding its
own message lock, so the callback only queues the ack and this thread applies it. The outbox goes
out in `seq` order with at most `max_inflight` unacknowledged; messages in flight when the link
drops are resent by paho, in order, on reconnect; after a restart, everything not acknowledged is
read again from the outbox. An alert older than its time-to-live is marked expired instead of
sent (and counted); younger ones carry the rest of their life as the MQTT 5 message expiry. Age
is the store's elapsed running time (agent.elapsed), never a difference of wall-clock times.

Storage failures (a full, read-only or failing disk) never stop this thread: what can be read is
still sent, deliveries that cannot be recorded are kept in memory (with what is in flight, at
most _MAX_UNMARKED; then no more is sent until they are written) and written as soon as the
disk takes them.

Retained status "online" once connected upstream and subscribed to readings (so "online" means
consuming), refreshed with buffer figures every `status_interval_s`; "offline" as Last Will and
on a clean stop.

The same connection takes fleet pushes: it subscribes to their envelope topics, and to the chunk
topics the agent asks for (`follow`) once an envelope is verified; its CONNECT asks the broker
for no packet over `MAX_MESSAGE_BYTES`, since anyone may publish there.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import BrokerConfig, ForwardConfig
from agent.connection import ClosedEarly, Explained, make_client
from agent.envelope import MAX_MESSAGE_BYTES
from agent.logs import Throttle
from agent.metrics import Histogram
from agent.store.database import Store
from agent.store.errors import StorageUnavailable

log = logging.getLogger(__name__)


def publish_latency() -> Histogram:
    """Publish-to-PUBACK latency, seconds: buckets from loopback to a slow cellular uplink."""
    return Histogram((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


_RETRY_AFTER_REJECT_S = 5.0
_EXPIRE_EVERY_S = 1.0
_MAX_UNMARKED = 10_000  # delivered but not yet recorded: about 0.3 MiB of ints at most


class Forwarder:
    def __init__(
        self,
        broker: BrokerConfig,
        config: ForwardConfig,
        store: Store,
        client_id: str,
        status_topic: str,
        status: Callable[[], dict[str, object]],
        subscriptions: list[str] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        latency: Histogram | None = None,
    ) -> None:
        """`status` returns the status document (without `state` and `ts`) when it is sent.
        `subscriptions` (fleet pushes) are renewed on every connect; their messages go to
        `on_message`, in paho's thread."""
        self.broker = broker
        self.config = config
        self.store = store
        self.status_topic = status_topic
        self.status = status
        self.client = make_client(broker, client_id)
        self.client.will_set(status_topic, self._status_payload("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self.subscriptions = subscriptions or []
        self._followed: set[str] = set()  # see `follow`
        self._follow_lock = threading.Lock()
        self._answered = False  # the broker answered this connection's CONNECT
        if on_message is not None:
            self.client.on_message = lambda _c, _u, msg: on_message(msg.topic, msg.payload)
        self.connected = threading.Event()
        self._source_ready = threading.Event()
        self._status_due = 0.0  # monotonic time of the next status; 0: as soon as possible
        self._events: queue.Queue[tuple[int, bool] | None] = queue.Queue()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._cursor = 0  # highest seq handed to paho in this process
        self._hold_until = 0.0
        self._next_expiry = 0.0
        self._unmarked: list[int] = []  # delivered, but the disk did not take the record yet
        self._storage_problem: str | None = None  # last seen by this thread, for the status
        self._sent_at: dict[int, float] = {}  # mid -> monotonic time handed to paho
        self.latency = latency or publish_latency()
        self.turned = time.monotonic()  # the loop's last turn, for the watchdog
        self._warn = Throttle(log)
        self.expired = 0
        self.failure: BaseException | None = None  # what stopped the forwarder, if anything
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)

    def start(self) -> None:
        # Anyone may publish on the push topics: a message larger than any push chunk is
        # dropped by the broker, never read into memory (MQTT 5 Maximum Packet Size; issue #13).
        connect = Properties(PacketTypes.CONNECT)
        connect.MaximumPacketSize = MAX_MESSAGE_BYTES
        self.client.connect_async(
            self.broker.host, self.broker.port, self.broker.keepalive, properties=connect
        )
        self.client.loop_start()
        self._thread.start()

    def follow(self, topics: set[str]) -> None:
        """Be subscribed to exactly these topics beside `subscriptions`: the chunks of a
        verified push, asked for a few at a time; renewed on every connect."""
        with self._follow_lock:
            new, gone = topics - self._followed, self._followed - topics
            self._followed = set(topics)
        # Not connected: paho refuses, and the next connect subscribes to them.
        if new:
            self.client.subscribe([(topic, 1) for topic in sorted(new)])
        if gone:
            self.client.unsubscribe(sorted(gone))

    def resubscribe(self) -> None:
        """Subscribe again: the broker sends what is retained there again (MQTT 5 retain
        handling 0), pushes dropped from a full push queue included."""
        topics = self._topics()
        if topics and self.connected.is_set():
            self.client.subscribe([(topic, 1) for topic in topics])

    def _topics(self) -> list[str]:
        with self._follow_lock:
            return [*self.subscriptions, *sorted(self._followed)]

    def notify(self) -> None:
        """New alerts are in the outbox."""
        self._events.put(None)

    def status_changed(self) -> None:
        """Something the status reports changed: send it now rather than at the next refresh."""
        self._status_due = 0.0
        self._events.put(None)

    def source_ready(self) -> None:
        """The agent is subscribed to readings: `online` may now be announced."""
        self._source_ready.set()
        self._status_due = 0.0
        self._events.put(None)

    def stop(self, drain_seconds: float, final: bool = True) -> None:
        """Wait up to `drain_seconds` for the outbox to empty, then say offline (when `final`;
        not when another forwarder takes over, as on a reload) and disconnect."""
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and self.connected.is_set() and self._has_pending():
            time.sleep(0.05)
        self._stopping.set()
        self._events.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if final and self.connected.is_set():
            info = self.client.publish(self.status_topic, self._status_payload("offline"), 1, True)
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    def _has_pending(self) -> bool:
        # Everything up to the cursor is in flight or delivered, recorded or not.
        if self._inflight:
            return True
        try:
            return bool(self.store.pending(after_seq=self._cursor, limit=1))
        except StorageUnavailable as exc:
            log.warning("cannot read the outbox while stopping (%s)", exc)
            return False

    def _status_payload(self, state: str, doc: dict[str, object] | None = None) -> bytes:
        return json.dumps({**(doc or self.status()), "state": state, "ts": time.time()}).encode()

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self._answered = True
        if rc.is_failure:
            log.warning("upstream refused connection: %s", rc)
            return
        log.info("upstream connected host=%s port=%s", self.broker.host, self.broker.port)
        topics = self._topics()
        if topics:
            self.client.subscribe([(topic, 1) for topic in topics])
        self.connected.set()
        self._status_due = 0.0
        self._events.put(None)

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

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        self._events.put((mid, not rc.is_failure))

    def _run(self) -> None:
        """The loop; an unexpected error is kept in `failure` for the agent to stop on, since a
        forwarder that died silently would leave the agent scoring with nothing going upstream."""
        try:
            self._loop()
        except Exception as exc:
            log.exception("forwarder stopped")
            self.failure = exc

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self.turned = time.monotonic()
            try:
                event = self._events.get(timeout=min(1.0, self.config.status_interval_s))
            except queue.Empty:
                event = None
            self._apply_acks(event)
            self._expire_old()
            self._storage_changed()
            if not self.connected.is_set():
                continue
            self._refresh_status()
            if time.monotonic() >= self._hold_until:
                self._publish_more()

    def _refresh_status(self) -> None:
        now = time.monotonic()
        if self._source_ready.is_set() and now >= self._status_due:
            self._status_due = now + self.config.status_interval_s
            doc = self.status()
            self.client.publish(self.status_topic, self._status_payload("online", doc), 1, True)
            # The Last Will goes with the next CONNECT: keep it as current as the status, so
            # that a crash reports the last push and figures, not those of the start.
            offline = self._status_payload("offline", doc)
            self.client.will_set(self.status_topic, offline, qos=1, retain=True)

    def _expire_old(self) -> None:
        now = time.monotonic()
        if self.config.alert_ttl_s == 0 or now < self._next_expiry:
            return
        self._next_expiry = now + _EXPIRE_EVERY_S
        try:
            n = self.store.expire(older_than_s=self.config.alert_ttl_s)
        except StorageUnavailable as exc:
            self._warn.warning("storage", "cannot mark old alerts expired yet (%s)", exc)
            return
        if n:
            self.expired += n
            log.warning("expired %d alerts older than %ss, undelivered", n, self.config.alert_ttl_s)

    def _apply_acks(self, first: tuple[int, bool] | None) -> None:
        events = [first]
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        delivered = []
        for event in events:
            if event is None or event[0] not in self._inflight:
                continue
            mid, ok = event
            seq = self._inflight.pop(mid)
            sent = self._sent_at.pop(mid, None)
            if ok and sent is not None:
                self.latency.observe(time.monotonic() - sent)
            if ok:
                delivered.append(seq)
            else:
                log.warning(
                    "upstream rejected alert seq=%d; retrying in %.0fs", seq, _RETRY_AFTER_REJECT_S
                )
                self._cursor = min(self._cursor, seq - 1)
                self._hold_until = time.monotonic() + _RETRY_AFTER_REJECT_S
        self._record_delivered(delivered)

    def _storage_changed(self) -> None:
        """A storage failure began or ended: send the status now, not at the next refresh."""
        problem = self.store.problem()
        if problem != self._storage_problem:
            self._storage_problem = problem
            self._status_due = 0.0

    def _record_delivered(self, seqs: list[int]) -> None:
        """Mark alerts delivered; when the disk does not take it (full, read-only) keep them
        and try again every turn. They are not sent again in this run; after a restart they
        would be (at least once)."""
        self._unmarked.extend(seqs)
        if not self._unmarked:
            return
        try:
            self.store.mark_delivered(self._unmarked)
        except StorageUnavailable as exc:
            self._warn.warning(
                "storage", "cannot record %d delivered alerts yet (%s)", len(self._unmarked), exc
            )
            return
        self._unmarked = []

    def _publish_more(self) -> None:
        room = min(
            self.config.max_inflight - len(self._inflight),
            # The bound on what may wait to be recorded, counting what is in flight.
            _MAX_UNMARKED - len(self._unmarked) - len(self._inflight),
        )
        if room <= 0:
            return
        try:
            items = self.store.pending(after_seq=self._cursor, limit=room)
        except StorageUnavailable as exc:
            self._warn.warning("storage", "cannot read the outbox (%s)", exc)
            return
        for item in items:
            info = self.client.publish(
                item.topic, item.payload, qos=1, properties=self._expiry(item.created_elapsed)
            )
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.info("publish deferred (%s); will retry", mqtt.error_string(info.rc))
                if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                    # paho keeps a QoS 1 message it could not send and sends it on reconnect.
                    self._inflight[info.mid] = item.seq
                    self._cursor = item.seq
                return
            self._inflight[info.mid] = item.seq
            self._sent_at[info.mid] = time.monotonic()
            self._cursor = item.seq

    def _expiry(self, created_elapsed: float) -> Properties | None:
        """The rest of the alert's time-to-live, so brokers drop it when it is stale too."""
        if self.config.alert_ttl_s == 0:
            return None
        props = Properties(PacketTypes.PUBLISH)
        left = self.config.alert_ttl_s - (self.store.elapsed() - created_elapsed)
        props.MessageExpiryInterval = max(1, int(left))
        return props
