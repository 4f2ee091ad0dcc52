"""The upstream session against a real broker: fleet push topics and followed chunk topics reach
`on_message`; the retained status says online once due, and offline on a final stop."""

from __future__ import annotations

import threading

from agent.config import BrokerConfig
from agent.upstream import PushTopics, StatusReport, Upstream
from fleet.mqtt import connect
from tests.conftest import DEVICE, wait_for, wait_status

ENVELOPE = f"edge/{DEVICE}/config"
CHUNK = f"edge/{DEVICE}/config/chunks/0"
NEXT_CHUNK = f"edge/{DEVICE}/config/chunks/1"


def test_push_topics_and_followed_chunks_are_received_and_the_status_is_retained(broker):
    upstream = broker("upstream")
    publisher = connect("127.0.0.1", upstream.port)
    # Retained, so each arrives when (and only when) the session subscribes to its topic.
    for topic in (ENVELOPE, CHUNK, NEXT_CHUNK):
        publisher.publish(topic, topic.encode(), qos=1, retain=True).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()
    received: list[str] = []
    lock = threading.Lock()

    def on_message(topic: str, _payload: bytes) -> None:
        with lock:
            received.append(topic)

    def topics() -> list[str]:
        with lock:
            return sorted(received)

    report = StatusReport(f"edge/{DEVICE}/status", lambda: {"device_id": DEVICE}, 60.0)
    session = Upstream(
        BrokerConfig(port=upstream.port),
        "upstream-test",
        report,
        PushTopics([ENVELOPE], on_message),
    )
    session.start()
    try:
        wait_for(lambda: topics() == [ENVELOPE], 30, "the push topic, subscribed on connect")
        session.follow({CHUNK})
        wait_for(lambda: topics() == sorted([ENVELOPE, CHUNK]), 30, "the followed chunk topic")
        # A chunk topic no longer wanted is unsubscribed: once the next one's retained message
        # came, published again, only the next one comes (QoS 1 from one publisher, in order).
        session.follow({NEXT_CHUNK})
        wait_for(lambda: NEXT_CHUNK in topics(), 30, "the next chunk topic")
        again = connect("127.0.0.1", upstream.port)
        for topic in (CHUNK, NEXT_CHUNK):
            again.publish(topic, b"again", qos=1).wait_for_publish(5)
        again.disconnect()
        again.loop_stop()
        wait_for(lambda: topics().count(NEXT_CHUNK) == 2, 30, "the next chunk, published again")
        assert topics().count(CHUNK) == 1, "the chunk topic left was unsubscribed"
        session.source_ready()
        session.refresh_status()
        assert wait_status(upstream.port, "online")["device_id"] == DEVICE
    finally:
        session.stop(final=True)
    wait_status(upstream.port, "offline")
