"""What every default must do on made-up streams (#15), whatever it scores on benchmarks: a
normal series never fires, a slow drift does not flood, a persisting level shift fires one
episode at its onset and goes quiet, and a fault that saturated for a week and ended does not
blind the asset to the next one. The detector suite tests them (tests/trainer/
test_detectors.py) and scripts/choose_defaults.py keeps only configurations that pass them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model.score import Scorer
from agent.model.stream import Stream
from trainer.features import sliding_windows
from trainer.readout import Episodes, episodes
from trainer.streaming import with_settings
from trainer.train import TrainOptions, TrainResult, train_values

KINDS = ("normal", "drift", "shift", "second", "after")
ROWS, SHIFT_AT, TRAIN_ROWS = 8000, 4000, 1000
MAX_DRIFT_OPEN = 0.01  # share of windows a slow drift may keep an episode open
# A second fault, a step of SECOND (3.3 noise spreads) from row SECOND_AT, alone (`second`)
# and after a first fault of 8 over the rows FIRST (`after`: 2,000 readings, a week at one
# every 5 minutes, saturated all along) that ended 8,000 readings (four weeks) before it.
# After the first it must fire at most SECOND_SLACK windows later than alone. (With the tail
# gate as first written, lifted to its cap by the first fault, it went unseen for 26,000
# readings after the first ended: docs/detection.md, "The tail gate".)
SECOND, SECOND_AT, SECOND_ROWS, FIRST = 1.0, 12000, 13000, (2000, 4000)
SECOND_SLACK = 10
# A reading every 5 minutes from 2024-01-01 00:00 UTC: the cycle of 288 readings is a day, so
# the daily profile sees the streams as a gateway would.
START, STEP = 1_704_067_200.0, 300.0


def times(rows: int = ROWS) -> np.ndarray:
    return START + STEP * np.arange(rows, dtype=np.float64)


def series(kind: str, rows: int | None = None, seed: int = 7) -> np.ndarray:
    """A daily cycle with noise [rows, 1] (ROWS, or SECOND_ROWS for the second fault's);
    `drift` adds a ramp of 8 over the series, `shift` a step of 8 at row SHIFT_AT, `second` a
    step of SECOND at row SECOND_AT, `after` that and a first fault of 8 over the rows FIRST."""
    if rows is None:
        rows = SECOND_ROWS if kind in ("second", "after") else ROWS
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    values = np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.3, rows)
    if kind == "shift":
        values[SHIFT_AT:] += 8.0
    elif kind == "drift":
        values += np.linspace(0, 8, rows)
    elif kind in ("second", "after"):
        values[SECOND_AT:] += SECOND
        if kind == "after":
            values[FIRST[0] : FIRST[1]] += 8.0
    return values[:, None]


def trained(algorithm: str) -> TrainResult:
    options = TrainOptions(algorithm=algorithm, train_rows=TRAIN_ROWS)
    made = series("normal")[:TRAIN_ROWS]
    return train_values(made, ["v"], options, "made", times=times(TRAIN_ROWS))


@dataclass(frozen=True)
class Case:
    raw: np.ndarray
    windows: np.ndarray


def cases(result: TrainResult) -> dict[str, Case]:
    """The graph's scores on each made-up stream (the expensive part, done once)."""
    scorer = Scorer.from_bytes(result.model_bytes, Path("made"))
    out = {}
    for kind in KINDS:
        windows = sliding_windows(series(kind).astype(np.float32), result.manifest.window)
        out[kind] = Case(scorer.score_many(windows).score, windows)
    return out


def read(result: TrainResult, case: Case, settings: dict | None = None) -> Episodes:
    """The episodes of one stream through the model's stream layer (`settings` over it)."""
    m = result.manifest
    params = with_settings(m.stream, settings) if settings else m.stream
    stream = Stream(params, m.window, len(m.sensors))
    ends = times(len(case.raw) + m.window - 1)[m.window - 1 :]  # each window's newest reading's
    scores = stream.step(stream.new_state(), case.raw, case.windows, ends)
    return episodes(scores, m.alert_threshold)


def failures(result: TrainResult, made: dict[str, Case], settings: dict | None = None) -> list[str]:
    """What the model with these stream settings gets wrong on the three streams (empty: none)."""
    wrong = []
    if read(result, made["normal"], settings).fires.any():
        wrong.append("a normal series fires")
    if read(result, made["drift"], settings).open.mean() >= MAX_DRIFT_OPEN:
        wrong.append("a slow drift floods")
    shift = read(result, made["shift"], settings)
    onset = SHIFT_AT - (result.manifest.window - 1)
    fires = np.flatnonzero(shift.fires)
    if not (len(fires) == 1 and onset <= fires[0] < onset + result.manifest.window + 10):
        wrong.append(f"a level shift fires at windows {fires.tolist()[:5]}, not once at its onset")
    if shift.open[-1000:].any():
        wrong.append("a level shift is still alerting 3000 windows later")
    alone, after = (second_fault(result, made[k], settings) for k in ("second", "after"))
    if alone is not None and (after is None or after > alone + SECOND_SLACK):
        wrong.append(
            f"a second fault fires {after} windows after its onset four weeks after a first, "
            f"{alone} alone"
        )
    return wrong


def second_fault(result: TrainResult, case: Case, settings: dict | None = None) -> int | None:
    """How many windows after its first reading the second fault's first episode fires (None:
    none does)."""
    onset = SECOND_AT - (result.manifest.window - 1)  # the first window holding a faulty reading
    fires = np.flatnonzero(read(result, case, settings).fires[onset:])
    return int(fires[0]) if len(fires) else None
