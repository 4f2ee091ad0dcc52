"""Publish signed pushes, and read the fleet's reported state, on the upstream broker.

Pushes are retained, so that a device that is offline gets the latest when it returns:
`<prefix>/fleet/device/<id>/<kind>` for one device, `<prefix>/fleet/group/<group>/<kind>` for a
group; large content goes first as retained chunks at `.../<kind>/chunk/<n>`, then the
envelope. Chunks must be retained: an agent asks for them only once it has verified their
envelope.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.config import IDENTIFIER_PATTERN, BrokerConfig
from agent.envelope import MAX_CHUNK_BYTES, load_private_key, seal
from fleet.mqtt import FleetError, connect

DEFAULT_CHUNK_BYTES = MAX_CHUNK_BYTES


def push_topic(prefix: str, target: str, kind: str) -> str:
    """`device:<id>` or `group:<name>` to the push topic of that kind."""
    scope, _, name = target.partition(":")
    if scope not in ("device", "group") or not _identifier(name):
        raise ValueError(f"target must be device:<id> or group:<name> (ids: {IDENTIFIER_PATTERN})")
    return f"{prefix}/fleet/{scope}/{name}/{kind}"


def _identifier(name: str) -> bool:
    return re.fullmatch(IDENTIFIER_PATTERN, name) is not None


def publish_push(
    broker: BrokerConfig,
    prefix: str,
    target: str,
    kind: str,
    content: bytes,
    key_path: Path,
    version: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, object]:
    """Sign and publish; returns the envelope (without its inline content)."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        # Agents refuse larger messages (the Maximum Packet Size of their upstream connection).
        raise ValueError(f"the chunk size must be 1 to {MAX_CHUNK_BYTES} bytes")
    topic_kind = kind if kind != "rollback" else json.loads(content)["kind"]
    topic = push_topic(prefix, target, topic_kind)
    envelope, chunks = seal(
        load_private_key(key_path),
        kind,
        target,
        version if version is not None else time.time_ns() // 1_000_000,
        content,
        chunk_bytes,
    )
    client = connect(broker.host, broker.port, security=broker)
    try:
        for i, chunk in enumerate(chunks):
            data = base64.b64encode(chunk).decode()
            body = {"sha256": envelope["sha256"], "index": i, "data": data}
            _publish(client, f"{topic}/chunk/{i}", json.dumps(body).encode())
        _publish(client, topic, json.dumps(envelope).encode())
    finally:
        client.disconnect()
        client.loop_stop()
    return {k: v for k, v in envelope.items() if k != "content"} | {"topic": topic}


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(30)
    if not info.is_published():
        raise FleetError(f"the broker did not acknowledge {topic}")


def fleet_status(broker: BrokerConfig, prefix: str, timeout: float = 10.0) -> list[dict]:
    """Every device's retained status: subscribe, then publish a marker; when the marker comes
    back, every retained status has arrived before it."""
    statuses: dict[str, dict] = {}
    marker = f"{prefix}/fleet/marker/{secrets.token_hex(8)}"
    seen = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            seen.set()
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and "device_id" in doc:
            statuses[str(doc["device_id"])] = doc

    client = connect(
        broker.host,
        broker.port,
        subscribe=f"{prefix}/+/status",
        on_message=on_message,
        security=broker,
    )
    try:
        client.subscribe(marker, qos=1)
        client.publish(marker, b"", qos=1).wait_for_publish(timeout)
        if not seen.wait(timeout):
            raise FleetError(f"no answer from {broker.host}:{broker.port} within {timeout}s")
    finally:
        client.disconnect()
        client.loop_stop()
    return [summary(statuses[d]) for d in sorted(statuses)]


def summary(status: dict) -> dict[str, object]:
    """A status document as `edge-fleet status` shows it."""
    model = status.get("model") or {}
    return {
        "device_id": status.get("device_id"),
        "online": status.get("state") == "online",
        "config_version": status.get("config_version", 0),
        "model": {k: model.get(k) for k in ("id", "version", "sha256")},
        "last_push": status.get("last_push"),
        "last_seen": status.get("last_seen"),
        "groups": status.get("groups", []),
        "storage": status.get("storage"),
        "heartbeat": status.get("heartbeat"),
    }
