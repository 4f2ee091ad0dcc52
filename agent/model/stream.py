"""Streaming layer over the graph's score: per asset, learned online, the same on the gateway
and offline (`edge-agent score`, the trainer's benchmarks).

The ONNX graph scores each window against what the model saw in training. Streams drift, so
that score is not the last word: `Stream.step` turns each asset's sequence of raw graph scores
(and the windows behind them) into the score the alert levels apply to. Its parameters travel
in the manifest (`Manifest.stream`); its per-asset state is a `StreamState` that the store
commits with the batch, like the windows, so a restart resumes exactly where the last commit
left off.

INTERFACE STUB (#15): the method `none` passes the raw score through. The contract below is
what the pipeline, the store and the offline scorer code against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

STATE_FORMAT = 1


class StreamParams(BaseModel):
    """How the layer adapts; written by the trainer, read from the manifest.

    A manifest without `stream` (a model exported before #15) gets these defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["none"] = Field(
        default="none", description="What the layer does over the graph's raw score."
    )
    reference_quantiles: list[float] = Field(
        default_factory=list,
        max_length=101,
        description="Quantiles of the graph's raw score on the training windows (for drift).",
    )


class StreamStateError(ValueError):
    """A saved state that does not fit this layer (corrupt, or from another model)."""


@dataclass
class StreamState:
    """One asset's learned state. Opaque to the pipeline: made by `Stream.new_state`, changed
    only by `Stream.step`, saved by `Stream.dump` and read back by `Stream.load`."""

    seen: int = 0


class Stream:
    def __init__(self, params: StreamParams, window: int, n_sensors: int) -> None:
        self.params = params
        self.window = window
        self.n_sensors = n_sensors

    def new_state(self) -> StreamState:
        return StreamState()

    def step(self, state: StreamState, raw: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """The adapted scores [batch] in [0, 1] for one asset's windows [batch, W, n] in time
        order, whose graph scores are `raw` [batch]; updates `state` as it goes."""
        state.seen += len(raw)
        return np.asarray(raw, dtype=np.float32)

    def dump(self, state: StreamState) -> bytes:
        return np.array([STATE_FORMAT, state.seen], dtype=np.int64).tobytes()

    def load(self, data: bytes) -> StreamState:
        if len(data) != 16:
            raise StreamStateError(f"stream state of {len(data)} bytes, expected 16")
        fmt, seen = np.frombuffer(data, dtype=np.int64).tolist()
        if fmt != STATE_FORMAT or seen < 0:
            raise StreamStateError(f"stream state format {fmt}, expected {STATE_FORMAT}")
        return StreamState(seen=seen)

    def drift(self, state: StreamState) -> float | None:
        """How far the asset's recent raw scores have moved from training, in [0, 1] (0: the
        same distribution), or None when the manifest has no reference or too few were seen."""
        return None
