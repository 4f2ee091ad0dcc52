"""Home Assistant MQTT discovery: each asset announced as a device with a problem binary
sensor and an anomaly score sensor, on the upstream broker.

The entities read what the agent sends anyway: their state topic is the asset's alert topic
(`<prefix>/<device>/alerts/<asset>`, at least once through the outbox), their availability the
agent's retained status with its Last Will. So this module only publishes the retained
discovery configs: one device per asset (HA's device model: a device is a physical thing; an
asset is the machine, the gateway only reports on it), announced when the asset gets state,
and removed (an empty retained config) when it is forgotten (idle or reset), so that the
entities disappear with it. Everything is sent again after each reconnect (the broker may have
lost retained messages), and what could not be sent waits for the next connection.

At most `ingest.max_assets` assets are announced: they are the assets that have state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.config import AgentConfig, HomeAssistantConfig

log = logging.getLogger(__name__)

# HA's rule for the node_id and object_id levels of a discovery topic.
_SAFE = re.compile(r"[^A-Za-z0-9_-]")
ORIGIN = {"name": "edge-anomaly-agent"}  # HA shows where a discovered entity came from


def object_id(name: str) -> str:
    """`name` as a discovery topic level: characters HA does not allow become `_`, and then a
    short hash keeps `a.b` and `a_b` apart."""
    safe = _SAFE.sub("_", name)
    if safe == name:
        return name
    return f"{safe}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Topics:
    discovery_prefix: str
    node_id: str
    alerts: str  # `<prefix>/<device>/alerts/` (the asset follows)
    status: str

    def config(self, component: str, asset: str, kind: str) -> str:
        level = f"{object_id(asset)}_{kind}"
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{level}/config"


def topics_for(config: AgentConfig, ha: HomeAssistantConfig) -> Topics:
    device, prefix = config.device.id, config.topics.prefix
    return Topics(
        ha.discovery_prefix,
        object_id(ha.node_id or device),
        f"{prefix}/{device}/alerts/",
        f"{prefix}/{device}/status",
    )


def announcements(topics: Topics, device_id: str, asset: str) -> list[tuple[str, dict]]:
    """The discovery configs of one asset: (topic, payload), in HA's documented keys."""
    state = topics.alerts + asset
    # Device ids and asset names are identifiers, which never hold `/`: so no two (device,
    # asset) pairs share an id (with `_`, gw_1 + pump and gw + 1_pump did, one HA device).
    unique = f"edge/{device_id}/{asset}"
    common = {
        "state_topic": state,
        "availability": [
            {
                "topic": topics.status,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": {
            "identifiers": [unique],
            "name": asset,
            "manufacturer": "edge anomaly agent",
            "model": f"asset on gateway {device_id}",
        },
        "origin": ORIGIN,
        "qos": 1,
    }
    problem = {
        **common,
        "name": "Anomaly",
        "unique_id": f"{unique}/problem",
        "device_class": "problem",
        "value_template": "{{ 'ON' if value_json.state == 'firing' else 'OFF' }}",
        "payload_on": "ON",
        "payload_off": "OFF",
    }
    score = {
        **common,
        "name": "Anomaly score",
        "unique_id": f"{unique}/score",
        "state_class": "measurement",
        "value_template": "{{ value_json.score }}",
        "json_attributes_topic": state,
        "json_attributes_template": (
            "{{ {'level': value_json.level, 'state': value_json.state, "
            "'top_sensors': value_json.top_sensors, 'episode_start': value_json.episode_start, "
            "'message': value_json.message} | tojson }}"
        ),
    }
    return [
        (topics.config("binary_sensor", asset, "problem"), problem),
        (topics.config("sensor", asset, "score"), score),
    ]


class Discovery:
    """Keeps HA's discovery configs in step with the assets that have state."""

    def __init__(
        self,
        config: AgentConfig,
        ha: HomeAssistantConfig,
        publish: Callable[[str, bytes], bool],
    ) -> None:
        """`publish(topic, payload)` sends retained at QoS 1 and says whether it was taken."""
        self.device_id = config.device.id
        self.topics = topics_for(config, ha)
        self.publish = publish
        self.announced: set[str] = set()  # on the current connection
        self.removing: set[str] = set()  # forgotten, removal not yet sent
        self.max_removing = config.ingest.max_assets
        self._reconnected = threading.Event()

    def reconnected(self) -> None:
        """In the MQTT thread: a new connection, on which everything is to be sent again."""
        self._reconnected.set()

    def sync(self, assets: Iterable[str]) -> None:
        """Announce the assets not yet announced, remove those gone."""
        current = set(assets)
        if self._reconnected.is_set():
            self._reconnected.clear()
            self.announced.clear()
        gone = self.announced - current
        self.announced -= gone
        self.removing |= gone
        self.removing -= current
        if len(self.removing) > self.max_removing:
            # Never sent: more assets were forgotten while disconnected than could have state.
            dropped = len(self.removing) - self.max_removing
            for name in sorted(self.removing)[:dropped]:
                self.removing.discard(name)
            log.warning("home assistant: %d removals not sent (disconnected too long)", dropped)
        for asset in sorted(self.removing):
            if all(self.publish(topic, b"") for topic, _ in self._configs(asset)):
                self.removing.discard(asset)
        for asset in sorted(current - self.announced):
            sent = [self.publish(t, json.dumps(p).encode()) for t, p in self._configs(asset)]
            if all(sent):
                self.announced.add(asset)

    def _configs(self, asset: str) -> list[tuple[str, dict]]:
        return announcements(self.topics, self.device_id, asset)
