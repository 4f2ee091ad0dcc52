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

The session itself (connection, Last Will, retained status, fleet push subscriptions) is
`upstream.Upstream`; this thread sends its status when due, between publishes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import ForwardConfig
from agent.logs import Throttle
from agent.metrics import Histogram
from agent.store.database import Store
from agent.store.errors import StorageUnavailable
from agent.upstream import Upstream

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
        upstream: Upstream,
        config: ForwardConfig,
        store: Store,
        latency: Histogram | None = None,
    ) -> None:
        """Sends `store`'s outbox over `upstream`, whose status it sends when due; `config`
        sets the in-flight bound and the alerts' time to live."""
        self.upstream = upstream
        self.config = config
        self.store = store
        self.client = upstream.client
        self.connected = upstream.connected
        upstream.listen(on_publish=self._on_publish, wake=self.notify)
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
        self.upstream.start()
        self._thread.start()

    def notify(self) -> None:
        """New alerts are in the outbox (or the status is due): wake the loop."""
        self._events.put(None)

    def stop(self, drain_seconds: float, final: bool = True) -> None:
        """Wait up to `drain_seconds` for the outbox to empty, then say offline (when `final`;
        not when another forwarder takes over, as on a reload) and disconnect."""
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and self.connected.is_set() and self._has_pending():
            time.sleep(0.05)
        self._stopping.set()
        self.upstream.stopping()
        self._events.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.upstream.stop(final)

    def _has_pending(self) -> bool:
        # Everything up to the cursor is in flight or delivered, recorded or not.
        if self._inflight:
            return True
        try:
            return bool(self.store.pending(after_seq=self._cursor, limit=1))
        except StorageUnavailable as exc:
            log.warning("cannot read the outbox while stopping (%s)", exc)
            return False

    def _on_publish(self, mid: int, ok: bool) -> None:
        self._events.put((mid, ok))

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
                event = self._events.get(timeout=min(1.0, self.upstream.report.interval_s))
            except queue.Empty:
                event = None
            self._apply_acks(event)
            self._expire_old()
            self._storage_changed()
            if not self.connected.is_set():
                continue
            self.upstream.refresh_status()
            if time.monotonic() >= self._hold_until:
                self._publish_more()

    def _expire_old(self) -> None:
        """Once a second: the elapsed time kept (whether or not alerts expire) and old alerts
        marked expired."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + _EXPIRE_EVERY_S
        try:
            self.store.keep_elapsed()
            if self.config.alert_ttl_s == 0:
                return
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
            self.upstream.status_changed()

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
