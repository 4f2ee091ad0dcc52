"""Replay a CSV as a Sparkplug B edge node: the tool that feeds a gateway reading Sparkplug.

The node publishes its NBIRTH and the device's DBIRTH first, then one DDATA per reading with
only the metrics that changed, by alias (report by exception, as real edge nodes do), and
publishes its births again whenever it is asked (an NCMD `Node Control/Rebirth`, which the agent
sends after a restart or a lost message). Metric names are the CSV's column names.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from datetime import datetime

import paho.mqtt.client as mqtt

from agent.config import IDENTIFIER_PATTERN, IDENTIFIER_RULE, BrokerConfig
from agent.sparkplug.edge import EdgeNode, is_rebirth_request
from fleet.mqtt import FleetError, connect


class SparkplugNode:
    def __init__(
        self,
        host: str,
        port: int,
        where: str,
        sensors: Sequence[str],
        security: BrokerConfig | None = None,
    ) -> None:
        """`where`: `GROUP/NODE/DEVICE`."""
        parts = where.split("/")
        if len(parts) != 3 or not all(re.fullmatch(IDENTIFIER_PATTERN, part) for part in parts):
            raise ValueError(f"expected GROUP/NODE/DEVICE, each {IDENTIFIER_RULE}, got {where!r}")
        group, node, self.device = parts
        self.node = EdgeNode(group, node, list(sensors))
        self.values: dict[str, float] = {}
        self.now_ms = int(time.time() * 1000)
        self.rebirths = 0
        self.sent = 0
        self.acked = 0
        self._lock = threading.Lock()
        self._acks = threading.Condition()
        self.client = connect(
            host,
            port,
            subscribe=self.node.topic("NCMD"),
            on_message=self._on_command,
            security=security,
        )
        self.client.on_publish = self._on_publish

    def births(self) -> None:
        with self._lock:
            self._births()

    def _births(self) -> None:
        values = [self.values.get(name, 0.0) for name in self.node.metrics]
        self._send(self.node.node_birth(self.now_ms))
        self._send(self.node.device_birth(self.device, self.now_ms, values))

    def data(self, ts_ms: int, reading: dict[str, float]) -> None:
        with self._lock:
            self.now_ms = ts_ms
            changed = {k: v for k, v in reading.items() if self.values.get(k) != v}
            self.values.update(reading)
            self._send(self.node.device_data(self.device, ts_ms, changed))

    def wait_acked(self, timeout: float) -> None:
        with self._acks:
            if not self._acks.wait_for(lambda: self.acked >= self.sent, timeout):
                raise FleetError(f"the broker acknowledged {self.acked} of {self.sent} messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _send(self, message: tuple[str, bytes]) -> None:
        with self._acks:
            self.sent += 1
        self.client.publish(*message, qos=1)

    def _on_publish(self, _c: object, _u: object, _mid: int, _rc: object, _p: object) -> None:
        with self._acks:
            self.acked += 1
            self._acks.notify_all()

    def _on_command(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if is_rebirth_request(msg.payload):
            with self._lock:
                self.rebirths += 1
                self._births()


def replay_sparkplug(
    readings: list[dict[str, object]],
    host: str,
    port: int,
    where: str,
    rate: float = 0.0,
    timeout: float = 60.0,
    security: BrokerConfig | None = None,
) -> int:
    """Births, then each reading as DDATA (`rate` readings/s, 0: no pacing); waits for every
    PUBACK."""
    sensors = [k for k in readings[0] if k != "ts"] if readings else []
    node = SparkplugNode(host, port, where, sensors, security)
    try:
        if readings:
            node.now_ms = _ms(readings[0]["ts"])
        node.births()
        started = time.monotonic()
        for n, reading in enumerate(readings, 1):
            node.data(_ms(reading["ts"]), {k: float(reading[k]) for k in sensors})  # type: ignore[arg-type]
            if rate > 0 and (delay := started + n / rate - time.monotonic()) > 0:
                time.sleep(delay)
        node.wait_acked(timeout)
        return len(readings)
    finally:
        node.close()


def _ms(ts: object) -> int:
    """A reading's `ts` (unix seconds, or ISO 8601 as `readings_from_csv` gives) in ms."""
    if isinstance(ts, int | float):
        return int(ts * 1000)
    return int(datetime.fromisoformat(str(ts)).timestamp() * 1000)
