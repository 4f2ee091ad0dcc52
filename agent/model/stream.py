"""Streaming layer over the graph's score: per asset, learned online, the same on the gateway
and offline (`edge-agent score`, the trainer's benchmarks).

The ONNX graph scores each window against what the model saw in training. Streams drift, so
that score is not the last word: `Stream.step` turns each asset's sequence of raw graph scores
(and the windows behind them) into the score the alert levels apply to. Its parameters travel
in the manifest (`Manifest.stream`); its per-asset state is a `StreamState` that the store
commits with the batch, like the windows, so a restart resumes exactly where the last commit
left off.

Method `likelihood` (#15), after the anomaly likelihood of Ahmad et al. (Neurocomputing 2017):
the graph's score, as its logit u, is compared with the asset's own recent history of u. A long
exponential average (mean and variance over about `long_window` windows, seeded from the
training windows) is the baseline; a short average over `short_window` windows is what the
asset does now. z = (short − long mean) / long spread; the adapted score is sigmoid(z − alert_z)
(0.5, the alert threshold, at z = alert_z). A sustained shift raises z at its onset; the
baseline then learns it and z falls back, so the shift alerts once. While the adapted score is
at or above 0.5 the baseline learns at `alarm_learning` times its rate, so a fault is not learnt
as normal before it has been seen (and after it ends the return to normal does not look like a
second fault). Method `online` (agent/model/online.py) first rescores each window with a normal
model that itself learns on the gateway, then applies the same likelihood. With `novelty`
(agent/model/novelty.py), a reading past every value its sensor has shown scores too, and with
`profile` (agent/model/profile.py) a reading far from its sensor's usual level at this hour of
the day, through a second likelihood: the window's score is the largest.

Every step is a scalar recurrence in plain floats, in time order, so the scores do not depend
on how the readings were cut into batches: a state dumped mid-stream and loaded gives the same
scores as an unbroken run.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.model.novelty import Novelty, NoveltyParams
from agent.model.online import OnlineModel, OnlineParams
from agent.model.profile import Profile, ProfileParams, hour_of
from agent.model.squash import logit_of_score

STATE_FORMAT = 2
# A layer with the tail gate keeps one more number per likelihood (its running quantile): its
# states are another layout, refused by a layer without the gate and the other way round.
# Format 3 kept the quantile as a logit; 4 keeps it as a distance above the baseline mean; 5
# also keeps the episode the gate may release (`tail_climb`).
TAIL_STATE_FORMAT = 4
RELEASE_STATE_FORMAT = 5
# The graph's score is float32 in [0, 1]; its logit is clipped so that a saturated 1.0 (or 0.0)
# is a large finite number, not an infinity that would poison the averages.
_LOGIT_CLIP = 16.0
_LOW = 1.0 / (1.0 + math.exp(_LOGIT_CLIP))
_HIGH = 1.0 - _LOW
# A likelihood's state: seen, short mean, long mean, long variance, last adapted score; with
# the tail gate its running quantile; with `tail_climb` the episode it may release (whether
# one is open, the baseline mean before it and the gate at its onset). The state's header is
# the format, then the main likelihood's.
_CORE = 5
_EPISODE = 3
# The averages are of logits within ±_LOGIT_CLIP from a baseline within ±100 (StreamParams),
# so no state the layer wrote holds a mean or variance past this: a saved one that does is
# damaged (a mean of -1e300 would keep the asset alerting for a million windows).
_STATE_BOUND = 1e5
# The tail gate sinks only while the short mean's distance above the baseline mean is below
# it: both means lie within the baseline's ±100 and the logits' ±_LOGIT_CLIP, so that distance
# is at least -200, and one window sinks it by at most a spread (under 160 logits). A saved gate
# (or gate at an episode's onset) far below is damaged or hostile: released to it, the asset
# would alert on every burst, as with no gate, for hundreds of thousands of windows.
_GATE_FLOOR = -1e3
# `Novelty.step` or `Novelty.quiet`: (novelty state, reading) -> score.
NoveltyCheck = Callable[[list[float], list[float]], float]
# From this many windows a batch checks its newest readings against the novelty ranges in
# numpy (`python -m scripts.bench_stream --ranges`: the two ways cost the same at about 10
# windows for one sensor and 8 for eight; from 12 on numpy costs less for both).
_BATCH_RANGES = 12
# Times (epoch seconds) whose hour `_hour_span` bounds exactly.
_EXACT_TIMES = 2.0**40


def _logit(score: float) -> float:
    """The calibrated logit of the graph's score (the inverse of the trainer's squash, which
    is the sigmoid only up to 0.9: agent.model.squash), clipped to ±_LOGIT_CLIP, so that u is
    on the scale the training baseline was fitted on; a score that is not a number (no valid
    graph gives one) counts as the highest."""
    if not score > _LOW:  # also NaN
        return _LOGIT_CLIP if score != score else -_LOGIT_CLIP
    if score >= _HIGH:
        return _LOGIT_CLIP
    return min(logit_of_score(score), _LOGIT_CLIP)


class StreamParams(BaseModel):
    """How the layer adapts; written by the trainer, read from the manifest.

    A manifest without `stream` (a model exported before #15) gets these defaults: `none`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none", "likelihood", "online"] = Field(
        default="none",
        description="What the layer does over the graph's raw score: `none` passes it through; "
        "`likelihood` scores the short-term average of the score against its long-term "
        "distribution; `online` rescores each window with a normal model that learns on the "
        "gateway, then applies the likelihood.",
    )
    long_window: int = Field(
        default=250, ge=2, le=1_000_000, description="Windows the baseline averages over."
    )
    short_window: int = Field(
        default=8, ge=1, le=10_000, description="Windows the current level averages over."
    )
    alert_z: float = Field(
        default=2.5, gt=0, le=100, description="Shift (in baseline spreads) that scores 0.5."
    )
    hold: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="While alerting, the shift needed to go on alerting is `alert_z` minus "
        "this (hysteresis: a level that hovers at the threshold does not fire again and again).",
    )
    alarm_learning: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of the learning rate the baseline keeps while the score alerts.",
    )
    min_spread: float = Field(
        # Its square must stay positive: at 1e-300 it was 0, and a baseline with no spread
        # (a constant score) divided by zero on the first window.
        default=1.0,
        ge=1e-6,
        le=100,
        description="Floor of the baseline's spread, in logits.",
    )
    baseline_mean: float = Field(
        default=0.0, ge=-100, le=100, description="Mean logit of the training windows' scores."
    )
    baseline_std: float = Field(
        default=1.0, ge=0, le=100, description="Spread of that logit on the training windows."
    )
    baseline_weight: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="How many windows the training baseline counts as (0: learn from scratch).",
    )
    online: OnlineParams | None = Field(
        default=None, description="The learning normal model of method `online`."
    )
    novelty: NoveltyParams | None = Field(
        default=None,
        description="Range novelty: a reading past the range its sensor has shown scores "
        "(none: off).",
    )
    profile: ProfileParams | None = Field(
        default=None,
        description="Daily profile: a reading far from its sensor's usual level at this hour "
        "of the day scores, through a likelihood of its own (none: off).",
    )
    tail_quantile: float = Field(
        default=0.0,
        ge=0,
        le=0.9999,
        description="Tail gate: to start an alert, a window's short-term average must also "
        "stand further above the baseline mean than this running upper quantile of the "
        "asset's own such distances, so after large bursts the smaller ones that follow do "
        "not alert (0: off).",
    )
    tail_step: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="How far (in baseline spreads) each window moves the tail gate's quantile.",
    )
    tail_cap: float = Field(
        default=8.0,
        gt=0,
        le=100,
        description="The most the tail gate asks, in baseline spreads above the baseline mean: "
        "a window that far out always passes it, so neither bursts nor a hostile stream can "
        "lift the gate past every fault.",
    )
    tail_climb: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Once an episode is over and the asset's short-term average is back "
        "within `alert_z` spreads of the baseline mean from before it, the tail gate keeps of "
        "what the episode lifted only what this many windows of climbing add to its height at "
        "the onset: a long fault that ended does not leave the asset waiting out the gate's "
        "slow sink (0: it keeps all, as models exported before it did; with the gate off it "
        "does nothing).",
    )
    reference_quantiles: list[float] = Field(
        default_factory=list,
        max_length=101,
        description="Quantiles of the graph's raw score on the training windows (for drift).",
    )

    @model_validator(mode="after")
    def _online_has_its_model(self) -> StreamParams:
        if (self.method == "online") != (self.online is not None):
            raise ValueError("method 'online' and the `online` model go together")
        if (self.novelty is not None or self.profile is not None) and self.method == "none":
            raise ValueError("`novelty` and `profile` need method 'likelihood' or 'online'")
        if self.tail_quantile > 0 and self.tail_cap <= self.alert_z:
            raise ValueError(
                f"tail_cap {self.tail_cap} must be more than alert_z {self.alert_z} "
                "(or the tail gate never gates)"
            )
        if self.hold >= self.alert_z:
            # At alert_z − hold <= 0 an asset whose baseline learnt the shift alerts on.
            raise ValueError(
                f"hold {self.hold} must be less than alert_z {self.alert_z} (or no alert ends)"
            )
        return self


class StreamStateError(ValueError):
    """A saved state that does not fit this layer (corrupt, or from another model)."""


@dataclass
class StreamState:
    """One asset's learned state. Opaque to the pipeline: made by `Stream.new_state`, changed
    only by `Stream.step`, saved by `Stream.dump` and read back by `Stream.load`."""

    seen: int = 0
    short_mean: float = 0.0
    long_mean: float = 0.0
    long_var: float = 1.0
    last: float = 0.0  # the previous adapted score: whether the asset is alerting
    # The tail gate's running quantile of the short mean's distance above the long mean, in
    # logits (unused without the gate).
    tail: float = 0.0
    # With `tail_climb`: [an episode is open (1.0) or not (0.0), the long mean before it, the
    # gate at its onset].
    episode: list[float] = field(default_factory=list)
    # OnlineModel's state as plain floats: its step reads and writes it once per window.
    online: list[float] = field(default_factory=list)
    novelty: list[float] = field(default_factory=list)  # Novelty's, likewise
    # Profile's, then its own likelihood's [seen, short mean, long mean, long variance, last].
    profile: list[float] = field(default_factory=list)


class Stream:
    def __init__(self, params: StreamParams, window: int, n_sensors: int) -> None:
        self.params = params
        self.window = window
        self.n_sensors = n_sensors
        self.model = (
            OnlineModel(params.online, window, n_sensors) if params.online is not None else None
        )
        self.novelty = (
            Novelty(params.novelty, n_sensors, window) if params.novelty is not None else None
        )
        self.profile = Profile(params.profile, n_sensors) if params.profile is not None else None
        p = params
        self._short_rate = 1.0 / p.short_window
        self._floor = p.min_spread * p.min_spread
        self._fire, self._stay = p.alert_z, p.alert_z - p.hold
        self._tail = p.tail_quantile > 0
        self._release = self._tail and p.tail_climb > 0
        # What an episode may leave the gate over its height at the onset, in spreads.
        self._allow = p.tail_climb * p.tail_step * p.tail_quantile
        self._core = _CORE + (1 if self._tail else 0) + (_EPISODE if self._release else 0)
        self._format = STATE_FORMAT
        if self._tail:
            self._format = RELEASE_STATE_FORMAT if self._release else TAIL_STATE_FORMAT
        parts = sum(part.state_size for part in (self.model, self.novelty) if part is not None)
        if self.profile is not None:
            parts += self.profile.state_size + self._core
        # The saved state as float64 in the machine's order, numpy's layout: packed from the
        # lists in one call (numpy's conversion of ~500 floats from a list costs over twice as
        # much, and the pipeline dumps every asset that moved, every batch).
        self._packer = struct.Struct(f"={1 + self._core + parts}d")
        # A batch of fewer than _BATCH_RANGES windows checks each newest reading with `step`.
        novelty = self.novelty
        self._each_alone = [novelty.step] * _BATCH_RANGES if novelty is not None else []
        # The hour `_hours` found last and the times [low, high) that share it.
        self._hour_span = (math.inf, -math.inf, -1)

    def new_state(self) -> StreamState:
        p = self.params
        online = self.model.new_state().tolist() if self.model is not None else []
        profile = []
        if self.profile is not None:
            q = self.profile.params
            core = self._new_core(q.baseline_mean, q.baseline_std)
            profile = [*self.profile.new_state(), *core]
        core = self._new_core(p.baseline_mean, p.baseline_std)
        return StreamState(
            0,
            *core[1:5],
            tail=core[5] if self._tail else 0.0,
            episode=core[6:],
            online=online,
            novelty=self.novelty.new_state() if self.novelty is not None else [],
            profile=profile,
        )

    def _new_core(self, mean: float, std: float) -> list[float]:
        """A likelihood's state before any window: its baseline from training, and the tail
        gate's quantile where a Gaussian baseline puts the alert, `alert_z` spreads above the
        mean (so until the asset has shown its own tail, the gate changes nothing)."""
        core = [0.0, mean, mean, std**2, 0.0]
        if self._tail:
            core.append(self._fire * math.sqrt(std**2 + self._floor))
        if self._release:
            core += [0.0, mean, 0.0]  # no episode open
        return core

    def step(
        self,
        state: StreamState,
        raw: np.ndarray,
        windows: np.ndarray,
        times: np.ndarray | None = None,
    ) -> np.ndarray:
        """The adapted scores [batch] in [0, 1] for one asset's windows [batch, W, n] in time
        order, whose graph scores are `raw` [batch] and whose newest readings were taken at
        `times` [batch] (epoch seconds; None: the daily profile is left out); updates `state`
        as it goes. Windows, scores or times that do not fit are refused (ValueError) before
        anything is learnt."""
        p = self.params
        if p.method == "none":
            state.seen += len(raw)
            return np.asarray(raw, dtype=np.float32)
        # Checked before anything is learnt: from _BATCH_RANGES windows numpy would broadcast
        # one sensor's readings over every novelty range, and the online model would learn a
        # state of another size.
        shape = windows.shape
        if len(shape) != 3 or shape[0] != len(raw) or shape[2] != self.n_sensors:
            raise ValueError(
                f"windows {list(shape)} for {len(raw)} scores: the layer takes "
                f"[{len(raw)}, window, {self.n_sensors} sensors]"
            )
        hours = None
        if self.profile is not None and times is not None:
            if len(times) != len(raw):
                raise ValueError(f"{len(times)} times for {len(raw)} windows")
            hours = self._hours(np.asarray(times, dtype=np.float64).tolist())
        # Each window's newest reading, for novelty and profile (windows slide by one reading).
        newest = checks = None
        if self.novelty is not None or hours is not None:
            newest = [windows[0, -1].tolist()] if len(windows) == 1 else windows[:, -1].tolist()
            if self.novelty is not None:
                few = len(newest) < _BATCH_RANGES
                checks = self._each_alone if few else self._novelty_checks(state, windows)
        if self.model is not None:
            return self._adapt(state, None, self.model.prepare(windows), newest, hours, checks)
        # The graph's scores as float32, the contract's resolution: ONNX Runtime's float64
        # kernels round a window's score differently by its place in a batch (a vector lane or
        # the scalar tail), and the agent batches differently after a restart, so the layer's
        # state would differ in its last bits from an undisturbed run's.
        scores = np.asarray(raw, dtype=np.float32).tolist()
        return self._adapt(state, scores, None, newest, hours, checks)

    def _novelty_checks(self, state: StreamState, windows: np.ndarray) -> list[NoveltyCheck]:
        """Per window of a batch of at least `_BATCH_RANGES`, the novelty method its newest
        reading needs: `quiet` for each reading `Novelty.within` finds within the ranges (most
        are: the batch's checks in numpy cost less than each in Python), `step` for the rest.
        (Smaller batches take `step` for each: `_each_alone`.)"""
        novelty = self.novelty
        assert novelty is not None  # the caller's condition
        if windows.dtype.kind != "f":  # numpy would compare integers past 2**53 as floats
            return [novelty.step] * len(windows)
        step, quiet = novelty.step, novelty.quiet
        return [quiet if ok else step for ok in novelty.within(state.novelty, windows[:, -1])]

    def _hours(self, times: list[float]) -> list[int]:
        """`hour_of` each time. Readings come seconds or minutes apart, so most fall in the hour
        of the one before: the last hour found is kept with the times it covers, and a time
        within them costs two comparisons (a NaN is within none)."""
        low, high, hour = self._hour_span
        out = []
        for t in times:
            if not low <= t < high:
                hour = hour_of(t)
                low, high = _hour_span(t)
            out.append(hour)
        self._hour_span = (low, high, hour)
        return out

    def _adapt(
        self,
        state: StreamState,
        scores: list[float] | None,
        feats: list[list[float]] | None,
        newest: list[list[float]] | None,
        hours: list[int] | None,
        checks: list[NoveltyCheck] | None,
    ) -> np.ndarray:
        """The recurrence, one window at a time in plain floats (a numpy call per window would
        cost more than the arithmetic): over the graph's `scores`, or the online model's; with
        `newest` (each window's newest reading) the range novelty's score is taken too (by
        each window's method in `checks`), and with `hours` the daily profile's through its own
        likelihood. The window's score is the largest. The main likelihood's own score is what
        gates learning: the others only add alerts."""
        p = self.params
        gate, prior = p.alarm_learning, p.baseline_weight
        core = [float(state.seen), state.short_mean, state.long_mean, state.long_var, state.last]
        if self._tail:
            core.append(state.tail)
            core += state.episode
        count = len(scores) if scores is not None else len(feats)
        online, profile = state.online, self.profile
        if hours is not None:
            # The profile's rows are learnt where they lie; its likelihood's few numbers are
            # copied out and back, as the main one's are.
            rows, size = state.profile, profile.state_size
            pcore, pprior = rows[size:], profile.params.baseline_weight
        out = [0.0] * count
        for i in range(count):
            if scores is not None:
                u = _logit(scores[i])
            else:
                u = self.model.step(online, feats[i], gate if core[4] >= 0.5 else 1.0)
            score = self._likelihood(core, u, prior)
            if newest is not None:
                reading = newest[i]
                if checks is not None:
                    novel = checks[i](state.novelty, reading)
                    score = novel if novel > score else score
                if hours is not None:
                    stat = profile.statistic(rows, hours[i], reading)
                    usual = self._likelihood(pcore, profile.logit(stat), pprior)
                    score = usual if usual > score else score
            out[i] = score
        state.seen = int(core[0])
        state.short_mean, state.long_mean, state.long_var, state.last = core[1:5]
        if self._tail:
            state.tail = core[5]
            state.episode = core[6:]
        if hours is not None:
            rows[size:] = pcore
        return np.asarray(out, dtype=np.float32)

    def _likelihood(self, core: list[float], u: float, prior: int) -> float:
        """One window of the likelihood over logit `u`; `core` is [seen, short mean, long mean,
        long variance, last score(, tail quantile(, episode))], updated in place. Returns the
        adapted score.

        The tail gate: a Gaussian baseline understates a bursty asset's tail. Once the asset
        has shown bursts far past its spread, bursts like them are not news, yet each would
        alert. With the gate an alert also needs the short mean past a running upper quantile
        of the asset's own short means' distances above the baseline mean (a distance, not a
        level: a level the baseline has followed, up a slow ramp or down to a calmer normal,
        neither lifts the gate nor leaves it behind), tracked by stochastic steps of
        `tail_step` spreads: up by `tail_quantile` of a step while passed, down by the rest
        otherwise. It climbs while bursts pass it and sinks back (1 − q) / q times as fast, so
        after a large burst the smaller ones that follow for a while do not alert. It starts
        where the Gaussian baseline puts the alert (until the asset shows its own tail the gate
        changes nothing) and never asks more than `tail_cap` spreads above the baseline mean.
        An alert under way is not gated (`hold` governs its end).

        With `tail_climb` the gate tells a fault that ended from a new normal. At an onset it
        notes the baseline mean and its own height (unless an episode still open has lift
        left to release); once no alert is under way and the short mean is back within
        `alert_z` spreads of that mean, the episode is over and the gate keeps of what it
        climbed since only what `tail_climb` windows of climbing add (a burst teaches it, a
        fault that saturated for hours does not lift it to its cap for the next fault to wait
        out). A level that stays up (a persisting shift) is never back, so the
        gate keeps all it climbed and the new normal's swings do not fire again while the
        baseline learns them."""
        p = self.params
        alerting = core[4] >= 0.5
        seen = core[0] + 1.0
        short = core[1]
        short += (u - short) * (self._short_rate if seen >= p.short_window else 1.0 / seen)
        mean, var = core[2], core[3]
        spread = math.sqrt(var + self._floor)
        z = (short - mean) / spread - (self._stay if alerting else self._fire)
        if self._tail:
            tail = core[5]
            level = short - mean
            if not alerting:
                gate = (level - tail) / spread
                z = gate if gate < z else z
            q = p.tail_quantile
            if self._release:
                tail = self._released(core, tail, short, spread, alerting)
            onset_tail = tail
            tail += p.tail_step * spread * (q if level >= tail else q - 1.0)
            cap = p.tail_cap * spread
            core[5] = tail if tail < cap else cap
        last = 1.0 / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
        if self._release and last >= 0.5 and not alerting:
            self._note(core, mean, onset_tail, spread)
        horizon = p.long_window
        rate = 1.0 / (prior + seen) if prior + seen < horizon else 1.0 / horizon
        d = u - mean
        if last >= 0.5 or alerting:
            # The level creeps toward the new one; the spread of normal is not taught
            # the fault's distance (that would blunt the layer long after).
            core[2] = mean + rate * p.alarm_learning * d
        else:
            core[2] = mean + rate * d
            core[3] = (1.0 - rate) * (var + rate * d * d)
        core[0], core[1], core[4] = seen, short, last
        return last

    def _note(self, core: list[float], mean: float, tail: float, spread: float) -> None:
        """At an onset, note the episode the gate may release (`_likelihood`), unless one
        still open has lift left to release (a long fault that fires again while it lasts).
        One whose lift the gate has shed is a level that stayed up: noting only an asset's
        first episode left a fault at that new normal released against the old mean, never."""
        if not core[6] or tail <= core[8] + self._allow * spread:
            core[6], core[7], core[8] = 1.0, mean, tail

    def _released(
        self, core: list[float], tail: float, short: float, spread: float, alerting: bool
    ) -> float:
        """The gate's height once an open episode is over (`_likelihood`), else `tail`."""
        if core[6] and not alerting and short - core[7] < self._fire * spread:
            core[6] = 0.0
            keep = core[8] + self._allow * spread
            return keep if keep < tail else tail
        return tail

    def dump(self, state: StreamState) -> bytes:
        head = [
            self._format,
            state.seen,
            state.short_mean,
            state.long_mean,
            state.long_var,
            state.last,
        ]
        if self._tail:
            head.append(state.tail)
            head += state.episode
        try:
            return self._packer.pack(*head, *state.online, *state.novelty, *state.profile)
        except struct.error as exc:  # numpy wrote any count, that `load` then refused
            count = len(head) + len(state.online) + len(state.novelty) + len(state.profile)
            raise StreamStateError(
                f"a state of {count} numbers for a layer of {self._packer.size // 8}: "
                "not this layer's"
            ) from exc

    def load(self, data: bytes) -> StreamState:
        online = self.model.state_size if self.model is not None else 0
        novelty = self.novelty.state_size if self.novelty is not None else 0
        profile = self.profile.state_size + self._core if self.profile is not None else 0
        header = 1 + self._core
        expected = 8 * (header + online + novelty + profile)
        if len(data) != expected:
            raise StreamStateError(f"stream state of {len(data)} bytes, expected {expected}")
        values = np.frombuffer(data, dtype=np.float64).copy()
        fmt = values[0]
        if fmt != self._format:
            raise StreamStateError(f"stream state format {fmt}, expected {self._format}")
        if not np.isfinite(values).all():
            raise StreamStateError("stream state holds a value that is not finite")
        core = _checked_core(values[1:header], "stream state")
        parts = np.split(values[header:], np.cumsum([online, novelty]))
        if self.model is not None and not self.model.valid_state(parts[0]):
            raise StreamStateError(
                "online state with a variance that is not positive or past 100 training ones"
            )
        if self.novelty is not None and not self.novelty.valid_state(parts[1]):
            raise StreamStateError(
                "novelty state with a score outside [0, 1], a fractional age or a range "
                "out of order"
            )
        if self.profile is not None:
            rows = parts[2][: self.profile.state_size]
            if not self.profile.valid_state(rows):
                raise StreamStateError(
                    "profile state with a fractional count or a variance out of range"
                )
            _checked_core(parts[2][self.profile.state_size :], "profile state")
        seen, short, mean, var, last = core[:5]
        return StreamState(
            int(seen),
            short,
            mean,
            var,
            last,
            tail=core[5] if self._tail else 0.0,
            episode=core[6:],
            online=parts[0].tolist(),
            novelty=parts[1].tolist(),
            profile=parts[2].tolist(),
        )

    def drift(self, state: StreamState) -> float | None:
        """How far the asset's recent raw scores have moved from training, in [0, 1] (0: the
        same distribution), or None when the manifest has no baseline or too few were seen.

        The long average's distance from the training mean, in training spreads, squashed to
        [0, 1) by 1 − exp(−d): 0.63 is one spread, 0.95 three."""
        p = self.params
        if p.method == "none" or p.baseline_weight == 0 or state.seen < p.short_window:
            return None
        spread = max(p.baseline_std, p.min_spread)
        return 1.0 - math.exp(-abs(state.long_mean - p.baseline_mean) / spread)


def _hour_span(t: float) -> tuple[float, float]:
    """The times [low, high) of t's hour, all of which `hour_of` gives t's hour: its start
    t // 3600 · 3600 and an hour on. Below 2**40 s in size (35,000 years from 1970) every step
    is exact (fmod is, and the multiples of 3600 there are floats), so `hour_of` of any time in
    the span is its start's hour; past that, and for a NaN or an infinity, an empty span."""
    if not abs(t) < _EXACT_TIMES:
        return math.inf, -math.inf
    low = t // 3600.0 * 3600.0
    return low, low + 3600.0


def _checked_core(values: np.ndarray, what: str) -> list[float]:
    """A likelihood's saved [seen, short mean, long mean, long variance, last(, tail
    quantile(, episode open, mean before it, gate at its onset))], refused when it is not one
    `_likelihood` can have left."""
    core = values.tolist()
    seen, short, mean, var, last = core[:5]
    if seen < 0 or seen != int(seen) or var < 0 or not 0 <= last <= 1:
        raise StreamStateError(f"{what} out of range (seen {seen}, variance {var}, last {last})")
    if len(core) > 6 and core[6] not in (0.0, 1.0):
        raise StreamStateError(f"{what} out of range (episode open {core[6]}, not 0 or 1)")
    if max(abs(short), abs(mean), var, *(abs(v) for v in core[5:])) > _STATE_BOUND:
        raise StreamStateError(
            f"{what} past what logits give (means {short}, {mean}, variance {var}, tail {core[5:]})"
        )
    gates = core[5:6] + core[8:9]  # the gate, and its height at an episode's onset
    if gates and min(gates) < _GATE_FLOOR:
        raise StreamStateError(f"{what} out of range (tail gate {gates}, below {_GATE_FLOOR})")
    return core
