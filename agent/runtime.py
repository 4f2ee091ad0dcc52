"""The runtime: wires the stages and owns start-up and shutdown order.

    local broker ─▶ ingest ─▶ window ─▶ score (ONNX) ─▶ alert ─▶ store ─▶ forward ─▶ upstream
    (paho thread:   (pipeline thread: one micro-batch,           (outbox)  (forwarder thread:
     queues only)    one ONNX call, one transaction)                        QoS 1, PUBACK)

Sinks start first and sources last; on stop the source goes first, what it queued is processed,
and the forwarder drains what it can before the offline status goes out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.alert import Alert, AlertTracker
from agent.config import AgentConfig
from agent.forward import Forwarder, make_client
from agent.ingest import DeadLetter, Parser, Reading
from agent.manifest import Thresholds
from agent.score import Scorer
from agent.store import Store, StoredReading
from agent.window import Windows

log = logging.getLogger(__name__)

_Message = tuple[str, bytes, float]


@dataclass
class Counters:
    readings: int = 0
    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.time)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        device, prefix = config.device.id, config.topics.prefix
        self.scorer = Scorer.load(config.model.path)
        manifest = self.scorer.manifest
        self.readings_topic = f"{prefix}/{device}/readings/+"
        self.alerts_prefix = f"{prefix}/{device}/alerts/"
        self.parser = Parser(
            manifest.sensor_names, f"{prefix}/{device}/readings/", config.scoring.max_payload_bytes
        )
        self.windows = Windows(manifest.window, len(manifest.sensors))
        model_info = {"id": manifest.model_id, "version": manifest.version}
        self.tracker = AlertTracker(
            device_id=device,
            model=model_info,
            sensors=manifest.sensor_names,
            thresholds=_thresholds(config, manifest.thresholds),
            fire_after=config.alerts.fire_after,
            resolve_after=config.alerts.resolve_after,
            top_sensors=config.alerts.top_sensors,
        )
        self.store = Store(config.storage.data_dir)
        self.forwarder = Forwarder(
            config.upstream,
            self.store,
            f"edge-agent-{device}-upstream",
            status_topic=f"{prefix}/{device}/status",
            status={"device_id": device, "model": {**model_info, "sha256": manifest.graph_sha256}},
            max_inflight=config.forward.max_inflight,
        )
        self.counters = Counters()
        self._stopping = False
        self._inbox: queue.Queue[_Message] = queue.Queue(maxsize=100_000)
        self.source = make_client(config.local, f"edge-agent-{device}-local")
        self.source.on_connect = self._on_local_connect
        self.source.on_subscribe = self._on_local_subscribe
        self.source.on_message = self._on_message
        self.source.on_disconnect = self._on_local_disconnect

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set, then shut down in order."""
        self.forwarder.start()
        local = self.config.local
        self.source.connect_async(local.host, local.port, local.keepalive)
        self.source.loop_start()
        log.info(
            "agent started device=%s model=%s@%s",
            self.config.device.id,
            self.scorer.manifest.model_id,
            self.scorer.manifest.version,
        )
        try:
            while not stop.is_set():
                self._process(self._take(timeout=0.2))
        finally:
            self._stopping = True
            self.source.disconnect()
            self.source.loop_stop()
            while batch := self._take(timeout=0):
                self._process(batch)
            self.forwarder.stop(self.config.forward.drain_seconds)
            log.info("agent stopped %s", self.counters)
            self.store.close()

    def _on_local_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.warning("local broker refused connection: %s", rc)
            return
        client.subscribe(self.readings_topic, qos=1)

    def _on_local_subscribe(
        self, _c: object, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        if any(code.is_failure for code in codes):
            log.error("local broker refused subscription topic=%s: %s", self.readings_topic, codes)
            return
        log.info("subscribed topic=%s", self.readings_topic)
        self.forwarder.source_ready()

    def _on_local_disconnect(
        self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if not self._stopping:
            log.warning("local broker disconnected (%s); reconnecting", rc)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.topic, msg.payload, time.time()))

    def _take(self, timeout: float) -> list[_Message]:
        try:
            batch = [self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < self.config.scoring.batch_max:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[_Message]) -> None:
        if not batch:
            return
        accepted, dead, windows = self._ingest(batch)
        stored, alerts = self._score_and_alert(accepted, windows)
        self.store.commit_batch(stored, alerts, dead)
        if alerts:
            self.forwarder.notify()
        c = self.counters
        c.batches += 1
        c.readings += len(stored)
        c.dead_letters += len(dead)
        c.alerts += len(alerts)
        for letter in dead:
            log.warning(
                "dead letter topic=%s reason=%s detail=%s",
                letter.topic,
                letter.reason,
                letter.detail,
            )

    def _ingest(
        self, batch: list[_Message]
    ) -> tuple[list[tuple[Reading, float, int | None]], list[DeadLetter], list[np.ndarray]]:
        """Readings in arrival order, each with the index of its window (None while filling)."""
        accepted: list[tuple[Reading, float, int | None]] = []
        dead: list[DeadLetter] = []
        windows: list[np.ndarray] = []
        for topic, payload, received_at in batch:
            readings, rejected = self.parser.parse(topic, payload, received_at)
            dead.extend(rejected)
            for r in readings:
                problem = self.windows.order_problem(r.asset, r.ts)
                if problem:
                    dead.append(DeadLetter(topic, problem, f"ts {r.ts}", received_at, payload))
                    continue
                window = self.windows.push(r.asset, r.ts, r.values)
                index = None
                if window is not None:
                    index = len(windows)
                    windows.append(window.copy())
                accepted.append((r, received_at, index))
        return accepted, dead, windows

    def _score_and_alert(
        self, accepted: list[tuple[Reading, float, int | None]], windows: list[np.ndarray]
    ) -> tuple[list[StoredReading], list[tuple[str, Alert]]]:
        scores = self.scorer.score(np.stack(windows)) if windows else None
        self.counters.scored += len(windows)
        stored, alerts = [], []
        for reading, received_at, index in accepted:
            score = level = None
            if scores is not None and index is not None:
                score = float(scores.score[index])
                level = self.tracker.thresholds.level_of(score)
                alert = self.tracker.update(
                    reading.asset, reading.ts, score, scores.contributions[index], reading.values
                )
                if alert is not None:
                    alerts.append((self.alerts_prefix + reading.asset, alert))
                    log.info(
                        "alert %s level=%s asset=%s id=%s",
                        alert.state,
                        alert.level,
                        alert.asset,
                        alert.id,
                    )
            stored.append(
                StoredReading(
                    reading.asset, reading.ts, reading.values.tolist(), score, level, received_at
                )
            )
        return stored, alerts


def _thresholds(config: AgentConfig, model: Thresholds) -> Thresholds:
    overrides = {k: v for k, v in config.alerts.levels.model_dump().items() if v is not None}
    return Thresholds(**{**model.model_dump(), **overrides})
