"""The model contract: the manifest every detector file carries, and how to read it.

One `.onnx` file is the whole scoring function. Its manifest (JSON under the `metadata_props`
key ``edge_manifest``) tells the agent which sensors to feed in which order, how long a window
is, and where the alert levels sit. The trainer writes it with these same models, so the two
sides cannot disagree about the schema.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.model.stream import StreamParams

MANIFEST_KEY = "edge_manifest"
SCHEMA_VERSION = 1
INPUT_NAME = "window"
OUTPUT_SCORE = "score"
OUTPUT_CONTRIBUTIONS = "contributions"
LEVELS = ("info", "warning", "critical")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorSpec(_Strict):
    name: str = Field(description="Column / JSON key of the sensor, matched as it is.")
    unit: str = Field(default="", description="Unit of the raw reading, for people.")
    mean: float = Field(description="Mean of the raw readings the model was trained on.")
    std: float = Field(description="Standard deviation of the raw training readings.")
    min: float = Field(description="Smallest raw training reading.")
    max: float = Field(description="Largest raw training reading.")


class Thresholds(_Strict):
    """Score levels in [0, 1]; a score at or above a level's value has that level."""

    info: float = Field(ge=0, le=1)
    warning: float = Field(ge=0, le=1)
    critical: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.info <= self.warning <= self.critical:
            raise ValueError("thresholds must satisfy info <= warning <= critical")
        return self

    def level_codes(self, scores: np.ndarray) -> np.ndarray:
        """For a whole batch at once: 0 below `info`, else 1 + the index in LEVELS."""
        edges = np.array([self.info, self.warning, self.critical])
        return np.searchsorted(edges, scores, side="right").astype(np.uint8)

    def level_of(self, score: float) -> str | None:
        """The highest level the score reaches, or None below `info`."""
        for level in reversed(LEVELS):
            if score >= getattr(self, level):
                return level
        return None


class Algorithm(_Strict):
    name: str
    params: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class TrainingSummary(_Strict):
    source: str = Field(description="File the model was trained from (name only).")
    rows: int = Field(description="Rows used for fitting.")
    windows: int = Field(description="Training windows the detector saw.")
    seed: int
    label_column: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class Parity(_Strict):
    """How far the ONNX graph's scores were from the reference computation at export."""

    max_abs_error: float
    tolerance: float
    windows_checked: int


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    version: str
    created_at: str
    sensors: list[SensorSpec] = Field(min_length=1)
    window: int = Field(ge=1)
    features: list[str] = Field(min_length=1)
    algorithm: Algorithm
    contamination: float = Field(gt=0, lt=0.5)
    alert_threshold: float = Field(ge=0, le=1)
    thresholds: Thresholds
    training: TrainingSummary
    parity: Parity
    stream: StreamParams = Field(default_factory=StreamParams)
    graph_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _stream_fits_the_sensors(self) -> Manifest:
        """The stream layer's per-sensor parts are for this model's sensors: checked here, where
        `check-config` and a push's checks see it, not first where the pipeline is built."""
        n = len(self.sensors)
        online, novelty = self.stream.online, self.stream.novelty
        if online is not None and len(online.mean) != 2 * n:
            raise ValueError(
                f"stream.online: {len(online.mean)} features for {n} sensors "
                f"(expected {2 * n}, a mean and a std per sensor)"
            )
        if novelty is not None and len(novelty.low) != n:
            raise ValueError(
                f"stream.novelty: ranges for {len(novelty.low)} sensors, the model has {n}"
            )
        profile = self.stream.profile
        if profile is not None and len(profile.mean) != n:
            raise ValueError(
                f"stream.profile: levels for {len(profile.mean)} sensors, the model has {n}"
            )
        return self

    @property
    def sensor_names(self) -> list[str]:
        return [s.name for s in self.sensors]


class ModelFileError(ValueError):
    """The file is not a usable detector: unreadable, no manifest, or a tampered graph."""


def graph_sha256(model_bytes: bytes) -> str:
    """sha256 of the serialized GraphProto inside an ONNX ModelProto.

    Hashing the graph field (not the whole file) lets the manifest, which lives in
    `metadata_props`, carry the hash of what it describes. Reading the protobuf wire format
    directly keeps the `onnx` package off the gateway.
    """
    graph = _top_level_field(model_bytes, field_number=7)
    if graph is None:
        raise ModelFileError("no graph in the ONNX file")
    return hashlib.sha256(graph).hexdigest()


def _top_level_field(data: bytes, field_number: int) -> bytes | None:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if number == field_number:
                return data[pos : pos + length]
            pos += length
        else:
            raise ModelFileError(f"not an ONNX file (protobuf wire type {wire_type})")
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ModelFileError("not an ONNX file (truncated protobuf)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_manifest(metadata: dict[str, str], path: Path) -> Manifest:
    """The manifest from an ONNX file's metadata map, with a clear error when it is missing."""
    raw = metadata.get(MANIFEST_KEY)
    if raw is None:
        raise ModelFileError(f"{path}: no '{MANIFEST_KEY}' in the model's metadata_props")
    try:
        return Manifest.model_validate_json(raw)
    except ValueError as exc:
        raise ModelFileError(f"{path}: invalid manifest: {exc}") from exc
