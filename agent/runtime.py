"""The runtime: wires the stages and owns start-up and shutdown order.

    local broker ─▶ ingest ─▶ window ─▶ score (ONNX) ─▶ alert ─▶ store ─▶ forward ─▶ upstream
    (paho thread:   (pipeline thread: one micro-batch,           (outbox)  (forwarder thread:
     queues only)    one ONNX call, one transaction)                        QoS 1, PUBACK)

    source.Source ──take()──▶ pipeline.Pipeline.apply() ──Batch──▶ store.Store.commit_batch()
         ▲                                                                  │
         └──────── acknowledge() ◀── committed ◀────────────────────────────┘
    telemetry.Telemetry counts each committed batch; forward.Forwarder sends the outbox over
    upstream.Upstream, the session that also sends the status and takes fleet pushes.

Between batches the loop also tends assets (resets, idle ones) and takes fleet pushes.
Sinks start first and sources last; on stop what the source queued is processed and
acknowledged, the source disconnects, and the forwarder drains what it can before the offline
status goes out.

Ingest is at least once, applied exactly once: the local session is persistent (fixed client id,
no clean start) and each message is acknowledged only after the transaction holding its effects
has committed. A copy of a message already applied (a broker redelivery, a publisher's resend)
is recognised by its digest, acknowledged and skipped. The windows and episodes are committed
with each batch and restored at start, so a restart does not change which alerts the input
produces, nor their ids. When not even a batch's alerts fit on disk, the batch stays
unacknowledged, the in-memory state goes back to the last commit, and the batch is retried with
back-off: the broker keeps the readings meanwhile.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.budget import Budget
from agent.config import AgentConfig, ConfigError
from agent.decoder_state import DecoderStates
from agent.forward import Forwarder, publish_latency
from agent.homeassistant import Discovery
from agent.logs import Throttle
from agent.model.score import Scorer
from agent.notify import Notifier, Watchdog
from agent.pipeline import Message, Pipeline, stream_key
from agent.push_queue import PushQueue
from agent.pushes import Desk, Health, Trial, load_effective
from agent.source import Source
from agent.sources import Reply
from agent.sources.router import MAX_REPLIES
from agent.store.batch import RECENT_DIGESTS
from agent.store.database import Store
from agent.store.errors import StorageUnavailable
from agent.telemetry import Links, Telemetry
from agent.upstream import PushTopics, StatusReport, Upstream

log = logging.getLogger(__name__)

_TEND_ASSETS_S = 1.0  # how often resets and idle assets are looked for, between batches
_NAMES_LOGGED = 10  # assets named in one log line
# Fleet messages (anyone on the upstream broker can send them, issue #13): the queue from the
# upstream thread holds a few of the largest, and one turn of the main loop decides at most
# _FLEET_TURN_MESSAGES of them or spends _FLEET_TURN_S, so the pipeline and the watchdog keep
# their turns whatever comes in.
_PUSH_QUEUE_MESSAGES, _PUSH_QUEUE_BYTES = 256, 4 * 1024 * 1024
_FLEET_TURN_MESSAGES, _FLEET_TURN_S = 32, 0.05
_REPORT_EVERY_S = 1.0  # rejections reach the status at most this often
_ASK_AGAIN_S = 5.0  # after drops from a full push queue, retained pushes are asked for again


@dataclass
class Reload:
    """SIGHUP. The signal handler sets `requested`; between batches the agent calls `load`,
    which reads and checks the config file again and returns it, or returns None (having
    logged why) to keep running on the current one."""

    requested: threading.Event
    load: Callable[[], AgentConfig | None]


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        notifier: Notifier | None = None,
        source: tuple[Path, dict[str, Any]] | None = None,
        scorer: Scorer | None = None,
    ) -> None:
        """`notifier` tells systemd about readiness, status and progress (if it is there).
        `source` (the config file and command-line overrides) lets fleet pushes rebuild the
        config; without it, or without trusted keys, pushes are not taken. `scorer`: the
        config's model, when the caller has loaded it already (its checks do)."""
        self.config = config
        self.notifier = notifier or Notifier({})
        device, prefix = config.device.id, config.topics.prefix
        self.scorer = scorer or Scorer.load(config.model.path)
        manifest = self.scorer.manifest
        storage = config.storage
        self.store = Store(
            storage.data_dir,
            Budget(storage.max_bytes, storage.hard_cap_bytes),
            synchronous=storage.synchronous,
        )
        sensors = json.dumps(manifest.sensor_names)
        if self.store.get_meta("sensors") != sensors:  # no write when the disk may be full
            self.store.set_meta("sensors", sensors)
        # With the digests of the messages applied most recently, this run or before it.
        self.pipeline = Pipeline(
            config, self.scorer, self.store.elapsed, self.store.recent_digests(RECENT_DIGESTS)
        )
        self.model_info = self.pipeline.model_info
        self.decoder_states = DecoderStates(self.store, self.pipeline.sources)
        self.decoder_states.restore()
        # Idleness on the store's elapsed running time: a clock stepped by NTP must not make
        # every asset look silent for a month (#13 item 8).
        seen_after = self.store.elapsed() - config.ingest.asset_idle_s
        self._prune_states(seen_after)
        self._restore_state(seen_after)
        self._tend_due = 0.0
        self.latency = publish_latency()
        self.desk = Desk(config, source, manifest.sensor_names) if source else None
        if self.desk is not None and not self.desk.enabled:
            self.desk = None
        self.telemetry = Telemetry(
            config,
            self.store,
            self.model_info,
            manifest.graph_sha256,
            self.latency,
            self.notifier,
            self.desk,
        )
        self.counters = self.telemetry.counters
        self._pushes = PushQueue(_PUSH_QUEUE_MESSAGES, _PUSH_QUEUE_BYTES)
        self._report_pending, self._report_due = False, 0.0
        self._drops_seen, self._ask_again_due = 0, 0.0
        self._replies_dropped = 0  # decoder replies over the per-batch bound, as last logged
        self.health = self._health_check()
        self.upstream = Upstream(
            config.upstream,
            f"edge-agent-{device}-upstream",
            StatusReport(
                f"{prefix}/{device}/status", self.telemetry.status, config.forward.status_interval_s
            ),
            PushTopics(self.desk.subscriptions() if self.desk else [], self._on_push),
        )
        self.forwarder = Forwarder(self.upstream, config.forward, self.store, self.latency)
        self.discovery = self._discovery()
        self.started = False  # set once run() is consuming; a failure before is a failed start
        self._warn = Throttle(log)
        self.source = Source(
            config,
            self.counters,
            self.pipeline.recent.get,
            self._source_ready,
            self.pipeline.sources,
        )
        self._turned = time.monotonic()  # the main loop's last turn
        self.watchdog = Watchdog(
            self.notifier,
            {"pipeline": lambda: self._turned, "forwarder": lambda: self.forwarder.turned},
        )
        self.telemetry.link(
            Links(
                upstream_connected=self.upstream.connected.is_set,
                local_connected=lambda: self.source.connected,
                inbox_counts=self.source.inbox.counts,
                holding=lambda: bool(self.source.held),
                # Copied whole under the GIL: the pipeline thread writes it between batches.
                drifts=lambda: dict(self.pipeline.drifts),
                stream_states_replaced=lambda: self.pipeline.stream_states_replaced,
            )
        )
        try:
            self.metrics_server = self.telemetry.metrics_server()
        except ConfigError:
            self.store.close()  # opened above; the failed start leaves nothing open
            raise

    @property
    def health(self) -> Health | None:
        """The judge of a version on trial; the pipeline shows it every score."""
        return self.pipeline.health

    @health.setter
    def health(self, judge: Health | None) -> None:
        self.pipeline.health = judge

    def run(self, stop: threading.Event, reload: Reload | None = None) -> AgentConfig | None:
        """Run until `stop` is set, then shut down in order. On a `reload` request (or a fleet
        push) whose new config is accepted, stop the same way, without saying offline, and
        return it. `started` tells a failure to start from one later on."""
        next_config: AgentConfig | None = None
        try:
            self._start()
            self.started = True
            while not stop.is_set():
                if self.forwarder.failure is not None:
                    raise RuntimeError("the forwarder stopped") from self.forwarder.failure
                self._turn()
                self._tend_assets()
                next_config = self._fleet_turn()
                if next_config is not None:
                    break
                if reload is not None and reload.requested.is_set():
                    reload.requested.clear()
                    next_config = reload.load()
                    if next_config is not None:
                        break
                if self.source.held and stop.wait(self.source.retry_delay):
                    break
                self._process(self.source.held or self.source.take(0 if self._pushes else 0.2))
        finally:
            self._shut_down(final=next_config is None or stop.is_set())
        return next_config

    def _start(self) -> None:
        self._start_metrics()
        self.forwarder.start()
        self.source.start()
        log.info(
            "agent started device=%s model=%s@%s restored_assets=%d",
            self.config.device.id,
            self.scorer.manifest.model_id,
            self.scorer.manifest.version,
            len(self.pipeline.windows.assets()),
        )

    def _shut_down(self, final: bool) -> None:
        """Commit and acknowledge what is held, disconnect, drain; `final` says offline (not
        when another pipeline takes over in this process)."""
        self.source.stopping = True
        if self.desk is not None:
            self.desk.flush()
        if final:
            self.notifier.stopping()
        else:
            self.notifier.reloading()
        # What was queued is committed and acknowledged while the connection is still up;
        # anything that arrives after this is redelivered at the next start.
        try:
            if self.started and not self.source.held:
                while batch := self.source.take(timeout=0):
                    self._process(batch)
        finally:
            self.source.inbox.close()  # the MQTT thread must not wait for room that never comes
        self.source.stop()
        # On a switch the next pipeline resends what is unacknowledged; `online` stays.
        self.forwarder.stop(self.config.forward.drain_seconds if final else 0, final=final)
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.decoder_states.keep(force=True)
        log.info("agent stopped %s", self.counters)
        self.store.close()

    def _health_check(self) -> Health | None:
        """A switch of this process is pending: the new version is on trial, whose health the
        pipeline feeds and whose verdict `self.trial` gives."""
        self.trial: Trial | None = (
            Trial.begun_here(self.desk, self.config.fleet) if self.desk else None
        )
        return self.trial.health if self.trial else None

    def _fleet_turn(self) -> AgentConfig | None:
        """Between batches: decide the pushes that came in, judge a version on trial. The
        config to switch to, if any."""
        if self.desk is None:
            return None
        if self._take_pushes():
            self.upstream.status_changed()
            return load_effective(*self.desk.source)
        self._fleet_upkeep()
        verdict = self.trial.judge() if self.trial else None
        if verdict is None:
            return None
        self.trial, self.health = None, None
        self.upstream.status_changed()
        if verdict.passed:
            for deferred in verdict.deferred:  # pushes that waited for this trial
                self._pushes.put(*deferred)
            return None
        return load_effective(*self.desk.source)

    def _on_push(self, topic: str, payload: bytes) -> None:
        """In the upstream connection's thread: queue a fleet message, or drop it (counted)."""
        if not self._pushes.put(topic, payload):
            self._warn.warning(
                "push-queue",
                "fleet message dropped: the push queue is full (dropped=%d) topic=%s",
                self._pushes.dropped,
                topic,
            )

    def _take_pushes(self) -> bool:
        """Decide the queued fleet messages, within this turn's budget; True to switch."""
        assert self.desk is not None
        deadline = time.monotonic() + _FLEET_TURN_S
        for _ in range(_FLEET_TURN_MESSAGES):
            message = self._pushes.get()
            if message is None:
                break
            decision = self.desk.offer(*message)
            if decision is not None:
                if decision.switch:
                    return True
                self._report_pending = True
            if time.monotonic() >= deadline:
                break
        return False

    def _fleet_upkeep(self) -> None:
        """Time out incomplete pushes, write held-back state, ask for the chunks wanted next,
        report rejections (at most once per _REPORT_EVERY_S), and after drops from a full push
        queue ask the broker for the retained pushes again."""
        assert self.desk is not None
        now = time.monotonic()
        if self.desk.expire(now) is not None:
            self._report_pending = True
        self.desk.tick(now)
        self.upstream.follow(self.desk.chunk_topics())
        if self._report_pending and now >= self._report_due:
            self._report_pending, self._report_due = False, now + _REPORT_EVERY_S
            self.upstream.status_changed()
        dropped = self._pushes.dropped
        if dropped > self._drops_seen and not self._pushes and now >= self._ask_again_due:
            log.info("asking for the retained pushes again (%d fleet messages dropped)",
                     dropped - self._drops_seen)  # fmt: skip
            self._drops_seen, self._ask_again_due = dropped, now + _ASK_AGAIN_S
            self.upstream.resubscribe()

    def _turn(self) -> None:
        """Once per turn of the main loop: progress for the watchdog, then telemetry's turn."""
        now = time.monotonic()
        self._turned = now
        self.watchdog.beat()
        self.telemetry.turn(now)

    def _start_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.start()
            host, port = self.metrics_server.server.server_address[:2]
            log.info("metrics on http://%s:%d/metrics", host, port)

    def _restore_state(self, seen_after: float | None = None) -> None:
        """Windows, streams and episodes as of the last commit (also used to undo a failed
        batch): at most `ingest.max_assets`, newest first, none idle since `seen_after`. An
        asset whose clock is beyond `ingest.max_future_s` (a future reading an older release
        accepted, or a gateway clock set back) gets its clock reset, or it would never take a
        reading (#13)."""
        ingest = self.config.ingest
        if seen_after is None:
            seen_after = self.store.elapsed() - ingest.asset_idle_s
        manifest = self.scorer.manifest
        states = self.store.load_states(
            manifest.graph_sha256, ingest.max_assets, seen_after, stream_key(manifest)
        )
        self.pipeline.restore(states, self.store.load_joins())
        self._rewind_ahead()

    def _rewind_ahead(self) -> None:
        """No asset's clock may stay more than `ingest.max_future_s` ahead of the gateway's:
        at start (a future reading an older release accepted) and while running (the gateway
        clock stepped back, say a bad NTP source corrected, after readings stamped by it),
        or its readings would be `out_of_order` until the clock caught up (#13)."""
        ahead = self.pipeline.windows.rewind_ahead(time.time() + self.config.ingest.max_future_s)
        if ahead:
            log.warning(
                "reset the clock of %d assets whose last reading is more than "
                "ingest.max_future_s ahead of the gateway clock (asset@ts): %s",
                len(ahead),
                _names(ahead),
            )

    def _prune_states(self, seen_after: float) -> None:
        """At start: the database keeps no more asset state than the agent restores."""
        ingest = self.config.ingest
        try:
            gone = self.store.prune_states(ingest.max_assets, seen_after)
        except (StorageUnavailable, sqlite3.OperationalError) as exc:
            log.warning("cannot delete the state of idle assets now: %s", exc)
            return
        if gone:
            log.warning(
                "forgot %d assets at start: silent for over ingest.asset_idle_s (%gs) or "
                "beyond ingest.max_assets (%d), the longest silent first",
                gone,
                ingest.asset_idle_s,
                ingest.max_assets,
            )

    def _tend_assets(self) -> None:
        """Between batches, once a second: bring the drift figures up to date; drop the
        assets an operator reset (`edge-agent reset-asset`) and those silent for over
        `ingest.asset_idle_s`, from memory and database, so that made-up asset names cannot
        hold memory or places for good (#13); and reset the clocks a gateway clock stepped
        back left ahead of it."""
        now = time.monotonic()
        if now < self._tend_due:
            return
        self._tend_due = now + _TEND_ASSETS_S
        self.pipeline.refresh_drifts()
        self._rewind_ahead()
        if self.discovery is not None:  # the assets forgotten last time go now
            self.discovery.sync(self.pipeline.windows.assets())
        try:
            reset = self.store.reset_requests()
            seen_before = self.store.elapsed() - self.config.ingest.asset_idle_s
            idle = self.pipeline.windows.idle(seen_before)
            gone = list(dict.fromkeys([*reset, *idle]))
            if gone:
                self.store.forget_assets(gone)
        except (StorageUnavailable, sqlite3.OperationalError) as exc:
            self._warn.warning("forget", "cannot forget assets now: %s", exc)
            return
        self.pipeline.forget(gone)
        if reset:
            log.warning(
                "reset %d assets on request (window, stream and episode): %s",
                len(reset),
                _names(reset),
            )
        if idle:
            log.info(
                "forgot %d assets silent for over %gs: %s",
                len(idle),
                self.config.ingest.asset_idle_s,
                _names(idle),
            )

    def _discovery(self) -> Discovery | None:
        """Home Assistant discovery on the upstream session, when configured."""
        if self.config.home_assistant is None:
            return None
        discovery = Discovery(
            self.config, self.config.home_assistant, self.upstream.publish_retained
        )
        self.upstream.connect_hooks.append(discovery.reconnected)
        return discovery

    def _source_ready(self) -> None:
        """In the local session's thread, once subscribed: readings flow."""
        self.upstream.source_ready()
        self.notifier.ready(self.telemetry.status_line())
        if self.health is not None:
            self.health.consuming = True

    def _process(self, batch: list[Message]) -> None:
        now = None
        if not batch:
            # No message came: readings waiting to be joined are due by the gateway's clock,
            # once subscribed (after a restart the broker first delivers what it kept).
            now = time.time()
            if not (self.source.subscribed and self.pipeline.joins_due(now)):
                return
        result = self.pipeline.apply(batch, now)
        try:
            self.store.commit_batch(result.batch)
        except StorageUnavailable as exc:
            self._hold(batch, exc)
            return
        self._committed(batch, result.batch.digests)
        self._reply(result.replies)
        self.decoder_states.keep()
        if result.batch.alerts:
            self.forwarder.notify()
        self.telemetry.batch_committed(result)

    def _reply(self, replies: list[Reply]) -> None:
        """Publish what decoders asked for, once their batch committed (agent.sources)."""
        for reply in replies:
            self.source.publish(reply.topic, reply.payload)
        sources = self.pipeline.sources
        if sources is not None and sources.replies_dropped > self._replies_dropped:
            self._replies_dropped = sources.replies_dropped
            self._warn.warning(
                "replies",
                "decoder replies dropped: more than %d in a batch (dropped=%d)",
                MAX_REPLIES,
                sources.replies_dropped,
            )

    def _committed(self, batch: list[Message], applied: list[tuple[bytes, bool]]) -> None:
        """Acknowledge (see `Source.acknowledge`), remember what was applied, and end a hold."""
        self.source.acknowledge(batch)
        self.pipeline.remember(applied)
        if self.source.release():
            log.warning("storage recovered; %d held messages committed", len(batch))
            self.upstream.status_changed()

    def _hold(self, batch: list[Message], exc: StorageUnavailable) -> None:
        """Keep the batch unacknowledged and retry it from the last committed state."""
        if not self.source.held:
            log.error("cannot store (%s); holding %d messages and retrying", exc, len(batch))
            self.upstream.status_changed()
        self.counters.storage_failures += 1
        self.source.hold(batch)
        self._restore_state()


def _names(names: list[str]) -> str:
    """Names for a log line: the first few, and how many more."""
    more = len(names) - _NAMES_LOGGED
    return ",".join(names[:_NAMES_LOGGED]) + (f" and {more} more" if more > 0 else "")
