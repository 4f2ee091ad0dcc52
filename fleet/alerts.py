"""Subscribe to alerts upstream, dropping duplicates by the alert's stable `id`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

from agent.config import BrokerConfig
from agent.model.manifest import LEVELS
from fleet.mqtt import connect


class AlertSubscriber:
    def __init__(
        self,
        host: str,
        port: int,
        prefix: str = "edge",
        device: str = "+",
        min_level: str | None = None,
        client_id: str = "",
        persistent: bool = False,
        on_alert: Callable[[dict], None] | None = None,
        share: str | None = None,
        security: BrokerConfig | None = None,
    ) -> None:
        """`share` joins the MQTT 5 shared subscription of that name: the broker hands each
        alert to one of its members, so several consumers split the stream."""
        self.topic = f"{prefix}/{device}/alerts/#"
        subscription = f"$share/{share}/{self.topic}" if share else self.topic
        self.min_rank = LEVELS.index(min_level) if min_level else 0
        self.alerts: list[dict] = []
        self.duplicates = 0
        self.malformed = 0
        self._seen: set[str] = set()
        self._changed = threading.Condition()
        self._on_alert = on_alert
        self.client = connect(
            host,
            port,
            client_id=client_id,
            clean_start=not persistent,
            subscribe=subscription,
            on_message=self._on_message,
            security=security,
        )

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            alert = json.loads(msg.payload)
            alert_id, level = str(alert["id"]), alert["level"]
            rank = LEVELS.index(level)
        except (ValueError, KeyError, TypeError):
            with self._changed:
                self.malformed += 1
            return
        with self._changed:
            if alert_id in self._seen:
                self.duplicates += 1
                return
            self._seen.add(alert_id)
            if rank < self.min_rank:
                return
            self.alerts.append(alert)
            self._changed.notify_all()
        if self._on_alert:
            self._on_alert(alert)

    def wait_until(self, predicate: Callable[[list[dict]], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.alerts), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
