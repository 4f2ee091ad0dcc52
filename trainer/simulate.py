"""Simulated pump-gateway data with a daily rhythm, noise and labelled injected faults.

Five correlated sensors follow one load curve (high by day, low by night), so a fault shows as a
sensor leaving both its own range and its relation to the others. Faults are written to the
`anomaly` (0/1) and `fault` (`kind:sensor`) columns; the demo and the core tests use both.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import numpy as np

SENSORS = ("flow_lpm", "pressure_bar", "current_a", "temperature_c", "vibration_mms")
FAULT_KINDS = {
    "spike": "a few readings jump far off",
    "drift": "a sensor drifts away steadily",
    "stuck": "a sensor repeats one value",
    "noise": "a sensor's noise grows several-fold",
}
_DURATION = {"spike": 3, "drift": 150, "stuck": 60, "noise": 60}
_NOISE = np.array([1.5, 0.05, 0.15, 0.2, 0.1])
_DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Fault:
    kind: str
    sensor: str
    start: int
    end: int  # exclusive

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.sensor}"


def parse_faults(spec: str) -> list[str]:
    """`spike,drift:2,none` → ['spike', 'drift', 'drift']; `none` or '' → []."""
    kinds: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, count = part.partition(":")
        if kind == "none":
            continue
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {[*FAULT_KINDS, 'none']}")
        if count and not count.isdigit():
            raise ValueError(f"fault count in {part!r} must be a whole number")
        kinds += [kind] * (int(count) if count else 1)
    return kinds


def simulate(
    rows: int,
    faults: list[str],
    seed: int = 0,
    interval: float = 60.0,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
) -> tuple[list[str], np.ndarray, list[Fault]]:
    """(timestamps, values [rows, 5], faults placed) for `rows` readings `interval` s apart."""
    rng = np.random.default_rng(seed)
    values = _normal_operation(rows, interval, rng)
    placed = _place(faults, rows, rng)
    scale = values.std(axis=0)
    for fault in placed:
        _inject(values, fault, SENSORS.index(fault.sensor), scale, rng)
    stamps = [
        (start + timedelta(seconds=i * interval)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(rows)
    ]
    return stamps, values, placed


def write_csv(path: str | Path, stamps: list[str], values: np.ndarray, faults: list[Fault]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        write_rows(f, stamps, values, faults)
    return path


def write_rows(out: TextIO, stamps: list[str], values: np.ndarray, faults: list[Fault]) -> None:
    """The CSV onto an open stream: a file, or stdout for `edge-trainer simulate --out -`."""
    label = [""] * len(stamps)
    for fault in faults:
        for i in range(fault.start, fault.end):
            label[i] = fault.label
    rows = csv.writer(out)
    rows.writerow(["timestamp", *SENSORS, "anomaly", "fault"])
    for i, stamp in enumerate(stamps):
        rows.writerow([stamp, *(f"{v:.4f}" for v in values[i]), int(bool(label[i])), label[i]])


def _normal_operation(rows: int, interval: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(rows) * interval
    phase = 2 * math.pi * t / _DAY_SECONDS
    wander = np.zeros(rows)
    for i in range(1, rows):
        wander[i] = 0.97 * wander[i - 1] + rng.normal(0, 0.008)
    load = np.clip(0.62 - 0.25 * np.cos(phase) + wander, 0.2, 1.0)
    warm = np.copy(load)
    for i in range(1, rows):
        warm[i] = 0.9 * warm[i - 1] + 0.1 * load[i]
    clean = np.column_stack(
        [
            120.0 * load,
            2.0 + 3.0 * load,
            4.0 + 8.0 * load,
            18.0 - 3.0 * np.cos(phase) + 25.0 * warm,
            1.5 + 1.5 * load,
        ]
    )
    return clean + rng.normal(0, 1, clean.shape) * _NOISE


def _place(kinds: list[str], rows: int, rng: np.random.Generator) -> list[Fault]:
    """Evenly spaced slots after a fault-free first tenth, one fault per slot."""
    if not kinds:
        return []
    first = rows // 10
    slot = (rows - first) // len(kinds)
    if slot < max(_DURATION[k] for k in kinds) + 20:
        raise ValueError(f"{rows} rows are too few for {len(kinds)} faults")
    placed = []
    for n, kind in enumerate(kinds):
        start = first + n * slot + int(rng.integers(0, slot - _DURATION[kind] - 10))
        sensor = SENSORS[int(rng.integers(0, len(SENSORS)))]
        placed.append(Fault(kind, sensor, start, start + _DURATION[kind]))
    return placed


def _inject(
    values: np.ndarray, fault: Fault, j: int, scale: np.ndarray, rng: np.random.Generator
) -> None:
    span = slice(fault.start, fault.end)
    n = fault.end - fault.start
    if fault.kind == "spike":
        values[span, j] += rng.choice([-1.0, 1.0]) * 4.0 * scale[j]
    elif fault.kind == "drift":
        values[span, j] += np.linspace(0.0, 3.0 * scale[j], n)
    elif fault.kind == "stuck":
        values[span, j] = values[fault.start, j]
    elif fault.kind == "noise":
        values[span, j] += rng.normal(0, 8.0 * _NOISE[j], n)
