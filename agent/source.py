"""The local MQTT session: the readings' source, and where they are acknowledged.

The session is persistent (fixed client id, no clean start) and acknowledged by hand: the paho
thread only puts messages in a bounded inbox; the pipeline thread takes them in micro-batches
(`take`) and calls `acknowledge` once the transaction holding their effects has committed. A
batch that could not be committed is `hold`-ed, unacknowledged, and retried after
`retry_delay` (doubling up to _RETRY_MAX_S) until `release`: the broker keeps the readings
meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import AgentConfig
from agent.connection import Explained, make_client
from agent.inbox import Inbox
from agent.logs import Throttle
from agent.message import Message
from agent.telemetry import Counters

if TYPE_CHECKING:
    from agent.sources.router import Sources

log = logging.getLogger(__name__)

_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 10.0
_BURST_QUIET_S = 0.1
# A first message that came within _STREAM_WAIT_S of asking is part of a stream (a backlog or a
# burst; live readings at 1,000 messages/s are a millisecond apart and do not wait): a batch
# that then finds the inbox empty waits once for _LINGER_S.
_STREAM_WAIT_S = 0.0003
_LINGER_S = 0.001
# The largest message the local broker may send (MQTT 5 Maximum Packet Size), at least this and
# twice `ingest.max_payload_bytes`: payloads over that are still read as `oversized` dead
# letters, much larger ones are dropped by the broker unread (issue #13: one 150 MB reading
# took the agent to 530 MiB, over the unit's MemoryMax=256M, on a broker without a limit).
_LOCAL_PACKET_BYTES = 1024 * 1024


class Source:
    def __init__(
        self,
        config: AgentConfig,
        counters: Counters,
        applied_before: Callable[[bytes], bool | None],
        on_subscribed: Callable[[], None],
        sources: Sources | None = None,
    ) -> None:
        """`applied_before(digest)`: True if a message with this digest gave readings and was
        applied (False: applied, gave none; None: not known). `on_subscribed`: called in the
        paho thread once readings flow. `sources`: the configured sources, whose topic filters
        are subscribed to as well."""
        self.config = config
        self.counters = counters
        self.applied_before = applied_before
        self.on_subscribed = on_subscribed
        device, prefix = config.device.id, config.topics.prefix
        self.readings_topic = f"{prefix}/{device}/readings/+"
        self.topics = [self.readings_topic, *(sources.filters() if sources else [])]
        self.readings_prefix = self.readings_topic[:-1]
        # Whether a topic's readings may be stamped on receipt (see agent.message).
        self.default_by_receipt = config.ingest.timestamps.policy != "payload"
        self.sources_by_receipt = sources.by_receipt if sources else None
        self.subscribed = False  # readings flow: set once subscribed, cleared on disconnect
        self._subacks = 0  # subscriptions of this connection not yet acknowledged
        self._last_received = 0.0
        self.stopping = False  # set at shutdown: what comes now is left to the next start
        self.held: list[Message] = []  # a batch whose commit failed, retried as is
        self.retry_delay = _RETRY_MIN_S
        self._resumed = threading.Event()
        self._connection = 0
        self._ack_lock = threading.Lock()
        self._warn = Throttle(log)
        # Room for two full batches, and no more messages than the broker was told to send.
        self.inbox: Inbox[Message] = Inbox(
            max_messages=config.local.receive_maximum,
            max_bytes=2 * config.scoring.batch_max_bytes,
        )
        self.client = make_client(config.local, f"edge-agent-{device}-local", manual_ack=True)
        self.client.on_connect = self._on_local_connect
        self.client.on_subscribe = self._on_local_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_local_disconnect
        self.client.on_connect_fail = self._on_local_connect_fail
        self.connected = False

    def start(self) -> None:
        """Connect in the background, resuming the persistent session."""
        local = self.config.local
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = local.session_expiry_s
        session.ReceiveMaximum = local.receive_maximum
        session.MaximumPacketSize = max(
            _LOCAL_PACKET_BYTES, 2 * self.config.ingest.max_payload_bytes
        )
        self.client.connect_async(
            local.host, local.port, local.keepalive, clean_start=False, properties=session
        )
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def hold(self, batch: list[Message]) -> None:
        """Keep `batch` unacknowledged, to retry after a longer delay than the last time."""
        self.held = batch
        self.retry_delay = min(self.retry_delay * 2, _RETRY_MAX_S)

    def release(self) -> bool:
        """The held batch committed: True if one was held."""
        if not self.held:
            return False
        self.held, self.retry_delay = [], _RETRY_MIN_S
        return True

    def _on_local_connect(
        self, client: mqtt.Client, _u: object, flags: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.warning("local broker refused connection: %s", rc)
            return
        with self._ack_lock:
            self._connection += 1
        self.connected = True
        resumed = bool(getattr(flags, "session_present", False))
        log.info("local connected session_present=%s", resumed)
        if resumed:
            # The broker now sends what it kept for us, possibly a newer message first.
            self._resumed.set()
        # One SUBSCRIBE per filter, each with its own identifier (its index + 1): the broker
        # sends a message once per filter it matches, and the identifier tells the copy for
        # the filter that owns the topic (the first that matches) from the others.
        self._subacks = len(self.topics)
        for n, topic in enumerate(self.topics, start=1):
            options = Properties(PacketTypes.SUBSCRIBE)
            options.SubscriptionIdentifier = n
            client.subscribe(topic, 1, properties=options)

    def _on_local_subscribe(
        self, _c: object, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        if any(code.is_failure for code in codes):
            log.error("local broker refused subscription topics=%s: %s", self.topics, codes)
            return
        self._subacks -= 1
        if self._subacks > 0:
            return
        log.info("subscribed topic=%s", ",".join(self.topics))
        self.subscribed = True
        self.on_subscribed()

    def _on_local_connect_fail(self, _c: object, _u: object) -> None:
        self._warn.warning("connect", "local connection failed: %s", Explained(self.config.local))

    def _on_local_disconnect(
        self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self.connected = self.subscribed = False
        if not self.stopping:
            log.warning("local broker disconnected (%s); reconnecting", rc)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if self.stopping:  # not acknowledged: the broker delivers it again at the next start
            return
        # Received times rise: a reading stamped on receipt never shares its time with another.
        received = self._last_received = max(time.time(), self._last_received + 1e-6)
        topic = msg.topic
        if topic.startswith(self.readings_prefix):
            by_receipt = self.default_by_receipt
        else:
            by_receipt = self.sources_by_receipt is not None and self.sources_by_receipt(topic)
        self.inbox.put(
            Message(
                topic,
                msg.payload,
                received,
                msg.mid,
                bool(msg.dup),
                self._connection,
                by_receipt,
                self._extra(topic, msg),
            ),
            len(msg.payload),
        )

    def _extra(self, topic: str, msg: mqtt.MQTTMessage) -> bool:
        """Whether `msg` is a copy sent for a subscription other than the topic's owner (the
        first of `topics` it matches); a broker that gives no identifiers sends one copy."""
        ids = getattr(msg.properties, "SubscriptionIdentifier", None)
        if not ids:
            return False
        owner = next(
            (n for n, f in enumerate(self.topics, start=1) if mqtt.topic_matches_sub(f, topic)),
            None,
        )
        return owner is not None and owner not in ids

    def take(self, timeout: float) -> list[Message]:
        """The next micro-batch (empty if nothing came within `timeout`): up to
        `scoring.batch_max` messages and `scoring.batch_max_bytes`, or the burst of a resumed
        session."""
        asked = time.monotonic()
        try:
            batch = [self.inbox.get(timeout)]
        except queue.Empty:
            return []
        streaming = time.monotonic() - asked < _STREAM_WAIT_S
        if self._resumed.is_set():
            self._resumed.clear()
            return self._burst(batch[0])
        limit, size = self.config.scoring, len(batch[0].payload)
        lingered = False
        while len(batch) < limit.batch_max and size < limit.batch_max_bytes:
            try:
                batch.append(self.inbox.get(0))
            except queue.Empty:
                if lingered or not streaming:
                    break
                # Messages are streaming in (a backlog): let the MQTT thread read more than
                # one before this batch commits. Otherwise the two threads hand the GIL to each
                # other after every message, and half the batches hold a single message, each
                # paying a whole transaction (measured: 753 of 1,306 batches in a drain).
                lingered = True
                time.sleep(_LINGER_S)
                continue
            size += len(batch[-1].payload)
        return batch

    def _burst(self, first: Message) -> list[Message]:
        """What a resumed session delivers at once, taken as one batch so it is put in order
        (up to `local.receive_maximum` messages and `scoring.batch_max_bytes` of payload).

        The broker first redelivers what it had in flight, often copies of messages already
        applied: those are acknowledged at once (they come first, so acknowledgements stay in
        order) and do not count, so that the broker can send the rest of its queue.
        """
        burst: list[Message] = []
        size, copies, message = 0, 0, first
        while True:
            copy = not (message.by_receipt and not message.dup)  # see Pipeline._not_applied
            if not burst and copy and self.applied_before(message.digest):
                self.acknowledge([message])
                copies += 1
            else:
                burst.append(message)
                size += len(message.payload)
            if (
                len(burst) >= self.config.local.receive_maximum
                or size >= self.config.scoring.batch_max_bytes
            ):
                break
            try:
                message = self.inbox.get(timeout=_BURST_QUIET_S)
            except queue.Empty:
                break
        if copies:
            log.info("skipped %d copies of messages already applied", copies)
            self.counters.redelivered += copies
        return burst

    def publish(self, topic: str, payload: bytes) -> None:
        """A decoder's reply on the local broker (a Sparkplug rebirth request), QoS 0."""
        self.client.publish(topic, payload, qos=0)

    def acknowledge(self, messages: list[Message]) -> None:
        """In arrival order, as MQTT requires; only after what they changed has committed.

        A message from an earlier connection is not acknowledged: its id may now belong to
        another message. If the broker kept the session it redelivers it, and the copy is
        recognised and acknowledged then.
        """
        with self._ack_lock:
            for m in messages:
                if m.connection == self._connection:
                    self.client.ack(m.mid, 1)
