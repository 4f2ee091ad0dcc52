"""Score stage: one ONNX Runtime session per model, fed micro-batches of windows.

The same class serves the running agent, `edge-agent score` and the trainer's export check, so
what the trainer verified is exactly what the gateway runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from agent.model.manifest import (
    INPUT_NAME,
    OUTPUT_CONTRIBUTIONS,
    OUTPUT_SCORE,
    Manifest,
    ModelFileError,
    graph_sha256,
    parse_manifest,
)

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_CALL_WINDOWS = 512
# ONNX Runtime's own exceptions derive from Exception, not RuntimeError.
ORT_RUN_ERRORS = (
    RuntimeError,
    ValueError,
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
    ort_errors.NotImplemented,
)
_ORT_LOAD_ERRORS = (
    RuntimeError,
    ValueError,
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidGraph,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)


@dataclass(frozen=True, slots=True)
class Scores:
    score: np.ndarray  # [batch] in [0, 1]
    contributions: np.ndarray  # [batch, n_sensors], rows sum to ~1


class Scorer:
    def __init__(self, session: ort.InferenceSession, manifest: Manifest, origin: Path) -> None:
        self.session = session
        self.manifest = manifest
        self.origin = origin
        self._outputs = [OUTPUT_SCORE, OUTPUT_CONTRIBUTIONS]
        self._one = _OneWindow(session, manifest.window, len(manifest.sensors))
        self._score_one = self._one.score  # bound once: the live path is a call per reading

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        return cls.from_bytes(read_model(path), Path(path))

    @classmethod
    def from_bytes(cls, data: bytes, origin: Path) -> Scorer:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except _ORT_LOAD_ERRORS as exc:
            raise ModelFileError(f"{origin}: ONNX Runtime cannot load the model: {exc}") from exc
        manifest = parse_manifest(session.get_modelmeta().custom_metadata_map, origin)
        actual = graph_sha256(data)
        if actual != manifest.graph_sha256:
            raise ModelFileError(
                f"{origin}: graph sha256 {actual} does not match the manifest's "
                f"{manifest.graph_sha256}: the file was altered after export"
            )
        _check_signature(session, manifest, origin)
        return cls(session, manifest, origin)

    def score(self, windows: np.ndarray) -> Scores:
        """Score [batch, window, n_sensors] raw readings in one session call."""
        if len(windows) == 1:
            return self._score_one(windows)
        score, contributions = self.session.run(
            self._outputs,
            {INPUT_NAME: np.ascontiguousarray(windows, dtype=np.float32)},
            self._one.run_options,
        )
        return Scores(score, contributions)

    def score_many(self, windows: np.ndarray) -> Scores:
        """Score [batch, window, n_sensors] in calls of at most MAX_CALL_WINDOWS, so that a
        large backlog does not make ONNX Runtime allocate (and keep) memory for all of it."""
        parts = [
            self.score(windows[i : i + MAX_CALL_WINDOWS])
            for i in range(0, len(windows), MAX_CALL_WINDOWS)
        ]
        if len(parts) == 1:
            return parts[0]
        return Scores(
            score=np.concatenate([p.score for p in parts]),
            contributions=np.concatenate([p.contributions for p in parts]),
        )


def read_model(path: str | Path) -> bytes:
    """A model file's bytes, refused when unreadable or over MAX_MODEL_BYTES."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"{path}: {size} bytes is over the {MAX_MODEL_BYTES} limit")
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model: {exc.strerror}") from exc


_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


class _OneWindow:
    """One window through buffers bound once: a live reading is usually alone in its batch, and
    binding skips ONNX Runtime's per-call allocation of inputs and outputs (a quarter of the
    time of a one-window call, measured in the bench).

    The run goes straight to the session's compiled binding (`_sess`, what
    `InferenceSession.run_with_iobinding` calls after its GPU-capture checks, which a CPU session
    never needs): that wrapper is 0.4 µs of the 20 µs per window that issue 15 allows. It passes
    one `RunOptions` made once: given none, ONNX Runtime builds a default one per call, about
    1 µs (measured with `bench.score_pairs`)."""

    __slots__ = (
        "_bound",
        "_run",
        "binding",
        "out_contributions",
        "out_score",
        "run_options",
        "window",
    )

    def __init__(self, session: ort.InferenceSession, window: int, n_sensors: int) -> None:
        types = {o.name: _DTYPES.get(o.type, np.float32) for o in session.get_outputs()}
        self.window = np.empty((1, window, n_sensors), dtype=np.float32)
        self.out_score = np.empty((1,), dtype=types[OUTPUT_SCORE])
        self.out_contributions = np.empty((1, n_sensors), dtype=types[OUTPUT_CONTRIBUTIONS])
        self.binding = session.io_binding()
        for bind, name, array in (
            (self.binding.bind_input, INPUT_NAME, self.window),
            (self.binding.bind_output, OUTPUT_SCORE, self.out_score),
            (self.binding.bind_output, OUTPUT_CONTRIBUTIONS, self.out_contributions),
        ):
            bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        self.run_options = ort.RunOptions()
        self._run, self._bound = _direct_run(session, self.binding)

    def score(self, window: np.ndarray) -> Scores:
        self.window[...] = window
        self._run(self._bound, self.run_options)
        return Scores(self.out_score.copy(), self.out_contributions.copy())


def _direct_run(
    session: ort.InferenceSession, binding: ort.IOBinding
) -> tuple[Callable[[object, object], None], object]:
    """(run, bound): `run(bound, None)` runs the session on the binding. The compiled session's
    own method where this ONNX Runtime has it (every release since 1.17 does), else the public
    wrapper."""
    compiled, bound = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    run = getattr(compiled, "run_with_iobinding", None)
    if run is None or bound is None:
        return (lambda b, options: session.run_with_iobinding(b, options)), binding
    return run, bound


def _check_signature(session: ort.InferenceSession, manifest: Manifest, origin: Path) -> None:
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    expected = [manifest.window, len(manifest.sensors)]
    if INPUT_NAME not in inputs or list(inputs[INPUT_NAME][1:]) != expected:
        raise ModelFileError(
            f"{origin}: expected input '{INPUT_NAME}' [batch, {expected[0]}, {expected[1]}], "
            f"graph has {inputs}"
        )
    missing = {OUTPUT_SCORE, OUTPUT_CONTRIBUTIONS} - outputs
    if missing:
        raise ModelFileError(f"{origin}: graph lacks output(s) {sorted(missing)}")
