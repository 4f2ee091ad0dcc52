"""The pipeline's stage logic, pure: parse, drop copies, order, window, score, alert.

    messages ─▶ copies skipped ─▶ parse ─▶ per asset: sort by time, dead-letter what is not
    after the asset's last reading ─▶ windows ─▶ score (ONNX, block by block) ─▶ stream
    (each asset's layer over the raw score, agent.model.stream) ─▶ episodes

`Pipeline.apply` takes one micro-batch of messages and returns what it changes (readings,
alerts, dead letters, asset state, digests) for the store to commit in one transaction. It
talks to no broker, opens no database and starts no thread: the runtime feeds it, commits its
result, and only then calls `remember` and lets the source acknowledge. When a commit fails,
`restore` puts the windows, streams and episodes back to the last commit.

Each asset's streaming state lives beside its window: made with it, bounded by the same
`ingest.max_assets`, committed with it (`AssetState.stream`), forgotten with it. The alert
levels, a trial's health check and the stored readings all take the layer's score; the raw
graph score is not stored: the readings are, and the same graph gives the same raw scores
again (retraining and drift analysis recompute them), so keeping it would cost 4 bytes a
reading of the buffer for nothing that cannot be had otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from agent.alert import Alert, AlertTracker
from agent.config import AgentConfig
from agent.ingest import DeadLetter, Parser, Readings
from agent.message import Message
from agent.model.manifest import Manifest
from agent.model.score import Scorer
from agent.model.stream import Stream, StreamState, StreamStateError
from agent.readings import LEVEL_NAMES, ReadingBlock
from agent.sources import Reply
from agent.sources.router import Parsed, Sources

# Data types only: the pipeline hands the store a `Batch`, it opens no database.
from agent.store.batch import RECENT_DIGESTS, AssetState, Batch
from agent.validate import merged_thresholds
from agent.window import Windows

if TYPE_CHECKING:
    from agent.pushes import Health

log = logging.getLogger(__name__)


@dataclass
class Applied:
    """What one micro-batch changes (`batch`, committed together or not at all) and what the
    counters and logs need: the readings imputed, how many messages were copies, how many
    windows were scored."""

    batch: Batch
    imputed: list[Readings]
    copies: int
    scored: int
    replies: list[Reply] = field(default_factory=list)  # to publish once `batch` commits


class Pipeline:
    def __init__(
        self,
        config: AgentConfig,
        scorer: Scorer,
        elapsed: Callable[[], float],
        recent: Iterable[tuple[bytes, bool]] = (),
    ) -> None:
        """`elapsed` is the store's running-time clock (when the gateway heard from an asset,
        for idleness); `recent` the digests of the messages applied most recently, this run or
        before it, and whether each gave readings."""
        self.config = config
        self.scorer = scorer
        self.elapsed = elapsed
        manifest = scorer.manifest
        device, prefix = config.device.id, config.topics.prefix
        self.alerts_prefix = f"{prefix}/{device}/alerts/"
        self.parser = Parser(
            manifest.sensor_names,
            f"{prefix}/{device}/readings/",
            config.ingest,
            [s.mean for s in manifest.sensors],
        )
        self.readings_prefix = f"{prefix}/{device}/readings/"
        # The configured sources, besides the readings topic (None: none, the default).
        self.sources = (
            Sources(config.ingest, manifest.sensor_names, [s.mean for s in manifest.sensors])
            if config.ingest.sources
            else None
        )
        self.windows = Windows(manifest.window, len(manifest.sensors))
        self.stream = Stream(manifest.stream, manifest.window, len(manifest.sensors))
        self.streams: dict[str, StreamState] = {}  # the same assets as `windows`
        # Each asset's `Stream.drift` as of the last `refresh_drifts`, for telemetry (read
        # from other threads: a dict copied whole under the GIL); only assets whose layer
        # reports one. `_stepped`: assets whose layer has moved since.
        self.drifts: dict[str, float] = {}
        self._stepped: set[str] = set()
        self.stream_states_replaced = 0  # saved states that failed to load (see `restore`)
        self.model_info = {"id": manifest.model_id, "version": manifest.version}
        self.tracker = AlertTracker(
            device_id=device,
            model=self.model_info,
            sensors=manifest.sensor_names,
            thresholds=merged_thresholds(config, manifest.thresholds, "config"),
            fire_after=config.alerts.fire_after,
            resolve_after=config.alerts.resolve_after,
            top_sensors=config.alerts.top_sensors,
        )
        self.health: Health | None = None  # a version on trial watches the scores
        # At most RECENT_DIGESTS, the oldest dropped first (see `remember`).
        self.recent: OrderedDict[bytes, bool] = OrderedDict(recent)

    def apply(self, messages: list[Message], now: float | None = None) -> Applied:
        """Everything `messages` change, in memory; the caller commits `batch`, then calls
        `remember(batch.digests)`, or `restore`s the last commit if it cannot. `now`: the
        clock joined readings wait on, when no message brings one (agent.sources.join)."""
        digests = [m.digest for m in messages]
        fresh = self._not_applied(messages, digests)
        blocks, dead, yielded, imputed = self._ingest(
            [messages[i] for i in fresh], [digests[i] for i in fresh], now
        )
        stored, alerts = self._score_and_alert(blocks)
        states = [
            AssetState(
                b.asset,
                self.windows.snapshot(b.asset),
                self.tracker.snapshot(b.asset),
                self.stream.dump(self.streams[b.asset]),
            )
            for b in blocks
        ]
        applied = [(digests[i], y) for i, y in zip(fresh, yielded, strict=True)]
        joins = self.sources.joiner.snapshots() if self.sources else []
        return Applied(
            Batch(stored, alerts, dead, states, applied, joins),
            imputed,
            # Copies for another matching subscription are not redeliveries.
            copies=len(messages) - len(fresh) - sum(m.extra for m in messages),
            scored=sum(len(b.windows) for b in blocks),
            replies=self.sources.replies if self.sources else [],
        )

    def joins_due(self, now: float) -> bool:
        """Whether a joined reading has waited long enough by `now` (agent.sources.join)."""
        due = self.sources.joiner.next_due() if self.sources else None
        return due is not None and due <= now

    def remember(self, applied: list[tuple[bytes, bool]]) -> None:
        """After the commit: these digests (and whether each gave readings) were applied."""
        for digest, gave_readings in applied:
            self.recent[digest] = gave_readings
            self.recent.move_to_end(digest)
        while len(self.recent) > RECENT_DIGESTS:
            self.recent.popitem(last=False)

    def restore(
        self, states: Iterable[AssetState], joins: list[tuple[str, str]] | None = None
    ) -> None:
        """Windows, streams, episodes and readings waiting to be joined as committed: all
        others are dropped.

        A saved stream state that does not load (corrupt, or another model's that slipped
        past the store's key) is replaced by a new one, counted in `stream_states_replaced`
        and logged once per restore: the asset keeps being scored."""
        self.windows.clear()
        self.tracker.clear()
        self.streams.clear()
        self.drifts.clear()
        replaced: list[tuple[str, str]] = []  # (asset, why)
        for state in states:
            self.windows.restore(state.asset, state.window)
            self.tracker.restore(state.asset, state.episode)
            self.streams[state.asset] = self._load_stream(state, replaced)
        if self.sources is not None:
            self.sources.joiner.restore(joins or [])
        self._stepped = set(self.streams)
        self.refresh_drifts()
        if replaced:
            self.stream_states_replaced += len(replaced)
            names = [asset for asset, _ in replaced]
            log.warning(
                "%d saved stream states did not load and start afresh (%s%s): %s",
                len(replaced),
                ",".join(names[:10]),
                f" and {len(names) - 10} more" if len(names) > 10 else "",
                replaced[0][1],
            )

    def _load_stream(self, state: AssetState, replaced: list[tuple[str, str]]) -> StreamState:
        if state.stream is None:  # a row of an older release, or of another layer
            return self.stream.new_state()
        try:
            return self.stream.load(state.stream)
        except StreamStateError as exc:
            replaced.append((state.asset, str(exc)))
            return self.stream.new_state()

    def forget(self, assets: list[str]) -> None:
        """Drop these assets' windows, streams and episodes (reset or idle)."""
        for asset in assets:
            self.windows.forget(asset)
            self.tracker.forget(asset)
            self.streams.pop(asset, None)
            self.drifts.pop(asset, None)
            self._stepped.discard(asset)
        if self.sources is not None:
            self.sources.joiner.forget(assets)

    def refresh_drifts(self) -> None:
        """`drifts` brought up to date for the assets whose layer moved since the last call:
        the runtime calls it once a second, not once a batch, so that a drift that compares
        distributions costs nothing per reading (and a status or scrape never computes one)."""
        for asset in self._stepped:
            drift = self.stream.drift(self.streams[asset])
            if drift is None or not math.isfinite(drift):  # not reported (or not a number)
                self.drifts.pop(asset, None)
            else:
                self.drifts[asset] = drift
        self._stepped.clear()

    def _not_applied(self, batch: list[Message], digests: list[bytes]) -> list[int]:
        """Indexes of messages to apply: all but copies of messages already applied.

        Copies come from the broker redelivering what was not acknowledged (DUP set, after a
        crash or a reconnect) and from publishers resending what they saw no PUBACK for (which
        the broker passes on as new). Both are byte-identical to the original on the same
        topic. Without DUP, only a copy of a message that gave readings is skipped: the same
        garbage sent twice is two dead letters. A message whose readings are stamped on
        receipt is skipped only as a redelivery (DUP, same packet id): the same value sent twice
        is two readings. A copy sent for another matching subscription (`extra`) is skipped.
        """
        fresh, in_batch = [], set()
        for i, (message, digest) in enumerate(zip(batch, digests, strict=True)):
            if message.extra:
                continue
            known = self.recent.get(digest)
            if known and message.by_receipt and not message.dup:
                # Same bytes, packet id and topic, not redelivered: a new reading on a wrapped
                # packet id (its time is its receipt; see agent.message).
                known = None
            if known or (message.dup and (known is not None or digest in in_batch)):
                continue
            in_batch.add(digest)
            fresh.append(i)
        if len(fresh) < len(batch):
            log.info("skipped %d copies of messages already applied", len(batch) - len(fresh))
        return fresh

    def _ingest(
        self, batch: list[Message], digests: list[bytes], now: float | None
    ) -> tuple[list[_Block], list[DeadLetter], list[bool], list[Readings]]:
        """Each asset's readings of the batch in time order, with the windows they complete;
        the dead letters; for each message whether it held readings; what was imputed.

        Sorting the batch by time absorbs reordering that happens before the agent: brokers
        (mosquitto 2.0 after a restart) and publishers may deliver a newer reading before older
        ones. What is still not after an asset's last reading is a dead letter.
        """
        by_asset: dict[str, list[tuple[Readings, int]]] = {}
        dead: list[DeadLetter] = []
        yielded: list[bool] = []
        imputed: list[Readings] = []
        copies_of: set[bytes] = set()  # digests in this batch that gave readings
        # The messages readings come from: the batch's, then one made for each joined reading.
        origins = batch
        self.parser.begin()
        if self.sources is not None:
            self.sources.begin()
            origins = []
        for i, (message, digest) in enumerate(zip(batch, digests, strict=True)):
            if digest in copies_of:  # a resend within the batch: skip it
                yielded.append(True)
                continue
            here = i
            if self.sources is not None:
                origins.append(message)
                here = len(origins) - 1
            if self.sources is not None and not message.topic.startswith(self.readings_prefix):
                parsed = self.sources.parse(message, self.windows.last_ts)
                self._add_parsed(parsed, origins, by_asset, dead, imputed)
                yielded.append(parsed.kept)
                if parsed.kept:
                    copies_of.add(digest)
                continue
            readings, rejected = self.parser.parse(
                message.topic, message.payload, message.received_at, self.windows.last_ts
            )
            dead.extend(rejected)
            yielded.append(bool(readings))
            if readings:
                copies_of.add(digest)
            for r in readings:
                by_asset.setdefault(r.asset, []).append((r, here))
                if r.imputed:
                    imputed.append(r)
        if self.sources is not None:
            # The join's clock: the newest message's receipt, else the caller's.
            clock = max((m.received_at for m in batch), default=now)
            if clock is not None:
                self._add_parsed(self.sources.due(clock), origins, by_asset, dead, imputed)
        batch = origins
        received = np.array([m.received_at for m in batch])
        room = self.config.ingest.max_assets - len(self.windows)
        blocks = []
        for asset, parts in by_asset.items():
            if asset not in self.windows:
                if room <= 0:
                    self._too_many_assets(parts, batch, dead)
                    continue
                room -= 1
            block = self._in_order(asset, parts, batch, received, dead)
            if block is not None:
                blocks.append(block)
        return blocks, dead, yielded, imputed

    @staticmethod
    def _add_parsed(
        parsed: Parsed,
        origins: list[Message],
        by_asset: dict[str, list[tuple[Readings, int]]],
        dead: list[DeadLetter],
        imputed: list[Readings],
    ) -> None:
        """A configured source's result into the batch's. A reading keeps the index in
        `origins` of the message it comes from: the batch's last one, or for a joined reading
        one made for it and added."""
        dead.extend(parsed.dead)
        for r, origin in parsed.readings:
            if not origins or origins[-1] is not origin:
                origins.append(origin)
            by_asset.setdefault(r.asset, []).append((r, len(origins) - 1))
            if r.imputed:
                imputed.append(r)

    def _too_many_assets(
        self, parts: list[tuple[Readings, int]], batch: list[Message], dead: list[DeadLetter]
    ) -> None:
        """A new asset while `ingest.max_assets` have state: each of its messages is a dead
        letter, and no state is made for it."""
        ingest = self.config.ingest
        detail = (
            f"{ingest.max_assets} assets have state (ingest.max_assets); an asset is forgotten "
            f"after {ingest.asset_idle_s:g}s without readings (ingest.asset_idle_s)"
        )
        for i in dict.fromkeys(i for _, i in parts):
            m = batch[i]
            dead.append(DeadLetter(m.topic, "too_many_assets", detail, m.received_at, m.payload))

    def _in_order(
        self,
        asset: str,
        parts: list[tuple[Readings, int]],
        batch: list[Message],
        received: np.ndarray,
        dead: list[DeadLetter],
    ) -> _Block | None:
        ts = np.array([t for r, _ in parts for t in r.ts], dtype=np.float64)
        values = np.array([row for r, _ in parts for row in r.values], dtype=np.float64)
        source = np.array([i for r, i in parts for _ in r.ts])
        order = np.argsort(ts, kind="stable")
        ts, values, source = ts[order], values[order], source[order]
        last = self.windows.last_ts(asset)
        repeat = np.concatenate([[False], ts[1:] == ts[:-1]])
        bad = (ts <= last) | repeat
        for j in np.flatnonzero(bad).tolist():
            reason = "duplicate_ts" if repeat[j] or ts[j] == last else "out_of_order"
            m = batch[source[j]]
            dead.append(DeadLetter(m.topic, reason, f"ts {ts[j]}", m.received_at, m.payload))
        if bad.any():
            keep = ~bad
            ts, values, source = ts[keep], values[keep], source[keep]
        if not len(ts):
            return None
        # When the gateway heard from the asset, in the store's elapsed running time.
        windows, first = self.windows.extend(asset, ts, values, self.elapsed())
        if asset not in self.streams:  # a new asset, made beside its window
            self.streams[asset] = self.stream.new_state()
        return _Block(asset, ts, values, received[source], windows, first)

    def _score_and_alert(
        self, blocks: list[_Block]
    ) -> tuple[list[ReadingBlock], list[tuple[str, Alert]]]:
        stored: list[ReadingBlock] = []
        alerts: list[tuple[str, Alert]] = []
        for b in blocks:
            # Block by block, from views of the window buffer: the batch's windows are never
            # all copied at once (W times its readings).
            if len(b.windows):
                scores = self.scorer.score_many(b.windows)
                # The windows end at the block's readings from `first` on: their times.
                times = b.ts[b.first :]
                score = self.stream.step(self.streams[b.asset], scores.score, b.windows, times)
                contributions = scores.contributions
                self._stepped.add(b.asset)
            else:
                score, contributions = np.empty(0, np.float32), None
            codes = self.tracker.thresholds.level_codes(score)
            levels = [LEVEL_NAMES[c] for c in codes.tolist()]
            if self.health is not None:
                self.health.observe(score, levels)
            alerts += self._track_block(b, score, contributions, levels)
            unscored = b.first
            stored.append(
                ReadingBlock(
                    b.asset,
                    b.ts,
                    b.values,
                    np.concatenate([np.full(unscored, np.nan, np.float32), score]),
                    np.concatenate([np.zeros(unscored, np.uint8), codes]),
                    b.received,
                )
            )
        return stored, alerts

    def _track_block(
        self, b: _Block, score: np.ndarray, contributions: np.ndarray | None, levels: list
    ) -> list[tuple[str, Alert]]:
        """Run the episode tracker over a block, skipping stretches where nothing can happen:
        below `info` with no episode under way."""
        alerts: list[tuple[str, Alert]] = []
        hot = np.flatnonzero(np.array([level is not None for level in levels], dtype=bool))
        j = 0
        while j < len(levels):
            if levels[j] is None and self.tracker.quiet(b.asset):
                later = hot[np.searchsorted(hot, j) :]
                if not len(later):
                    break
                j = int(later[0])
                continue
            row = b.first + j
            alert = self.tracker.update(
                b.asset, float(b.ts[row]), float(score[j]), contributions[j], b.values[row]
            )
            if alert is not None:
                alerts.append((self.alerts_prefix + b.asset, alert))
                log.info(
                    "alert %s level=%s asset=%s id=%s",
                    alert.state,
                    alert.level,
                    alert.asset,
                    alert.id,
                )
            j += 1
        return alerts


@dataclass
class _Block:
    """One asset's accepted readings of a batch, in time order, and the windows they complete:
    row i has window i - first (rows before `first` only fill a new asset's first window)."""

    asset: str
    ts: np.ndarray
    values: np.ndarray
    received: np.ndarray
    windows: np.ndarray
    first: int


def stream_key(manifest: Manifest) -> str:
    """What a saved stream state belongs to: the graph whose raw scores it learned and the
    layer's parameters. A model switch (restart, SIGHUP, push) to a model with another key
    starts every asset's layer anew; the same key (the same file, or one re-exported with
    only other thresholds) carries the states on."""
    stream = manifest.stream.model_dump_json()
    return hashlib.sha256(f"{manifest.graph_sha256}\0{stream}".encode()).hexdigest()
