"""A model whose manifest carries stream parameters no export gives (a hand edit, a damaged or
hostile file): `check-config` refuses it naming the field, as the agent's start and a push's
validation (the same `Scorer.load`) do, instead of running a layer that scores every window
as the worst or none at all."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from agent.model.manifest import MANIFEST_KEY
from tests.conftest import run_cli
from tests.manifests import with_stream as _with_stream
from trainer.train import TrainOptions, train, write_model


@pytest.fixture(scope="module")
def online_model(sim_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = train(sim_data.train_csv, TrainOptions(algorithm="online", window=10, seed=3))
    assert result.manifest.stream.method == "online"
    return write_model(result, tmp_path_factory.mktemp("online") / "online.onnx")


def _edited(model: Path, out: Path, field: str, value: object) -> Path:
    proto = onnx.load(str(model))
    (entry,) = [p for p in proto.metadata_props if p.key == MANIFEST_KEY]
    manifest = json.loads(entry.value)
    online = manifest["stream"]["online"]
    online[field] = [value] * len(online[field]) if isinstance(online[field], list) else value
    entry.value = json.dumps(manifest)
    onnx.save(proto, str(out))
    return out


def _check(tmp_path: Path, model: Path) -> tuple[int, str]:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "g"\n[upstream]\nport = 1\n[model]\npath = "{model}"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    result = run_cli("agent", "check-config", str(config))
    return result.returncode, result.stderr


# What each did: a spread whose square is 0 (every window the worst score) or infinite (none
# alerts, and no state saves); a mean past any float32 reading (every window the worst); a
# threshold no score reaches (the asset blind); a raw-score unit of 1e-300 (scores 0 or 1).
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scale", 1e-200),
        ("scale", 1e200),
        ("mean", 1e300),
        ("threshold", 1e300),
        ("spread", 1e-300),
    ],
)
def test_check_config_refuses_online_parameters_no_export_gives(
    online_model: Path, tmp_path: Path, field: str, value: float
):
    assert _check(tmp_path, online_model)[0] == 0
    code, stderr = _check(tmp_path, _edited(online_model, tmp_path / "m.onnx", field, value))
    assert code == 2, stderr
    assert f"stream.online.{field}" in stderr, stderr


@pytest.mark.parametrize("alert_z", [1.5, 1.0])  # hold 1.5: equal to alert_z, and past it
def test_check_config_refuses_a_hold_that_never_lets_an_alert_end(
    model_path: Path, tmp_path: Path, alert_z: float
):
    """While alerting the layer needs a shift of `alert_z − hold`: at 0 or below, a shift that
    has been learnt as the new normal keeps alerting (half the time at 0, always below)."""
    fine = _with_stream(model_path, tmp_path / "ok.onnx", alert_z=1.5, hold=0.5)
    assert _check(tmp_path, fine)[0] == 0
    bad = _with_stream(model_path, tmp_path / "m.onnx", alert_z=alert_z, hold=1.5)
    code, stderr = _check(tmp_path, bad)
    assert code == 2, stderr
    assert "stream" in stderr and "hold" in stderr and "alert_z" in stderr, stderr


def test_check_config_refuses_a_spread_floor_whose_square_is_zero(model_path, tmp_path):
    """min_spread 1e-300 squared is 0: with a training baseline of no spread the layer divided
    by zero on the asset's first window (ZeroDivisionError in the scoring loop)."""
    bad = _with_stream(model_path, tmp_path / "m.onnx", min_spread=1e-300, baseline_std=0.0)
    code, stderr = _check(tmp_path, bad)
    assert code == 2, stderr
    assert "stream.min_spread" in stderr, stderr


# A quantile of 1 would never sink (the gate climbs for good); a step of 0 never moves; a cap
# at alert_z or past 100 spreads would leave the gate nothing to do or blind the asset for good;
# a climb that is negative, fractional or past 10,000 windows is no export's.
@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"tail_quantile": 1.0}, "stream.tail_quantile"),
        ({"tail_quantile": -0.5}, "stream.tail_quantile"),
        ({"tail_quantile": 0.99, "tail_step": 0.0}, "stream.tail_step"),
        ({"tail_quantile": 0.99, "tail_cap": 1e9}, "stream.tail_cap"),
        ({"tail_quantile": 0.99, "alert_z": 2.5, "tail_cap": 2.5}, "tail_cap"),
        ({"tail_quantile": 0.99, "tail_climb": -1}, "stream.tail_climb"),
        ({"tail_quantile": 0.99, "tail_climb": 2.5}, "stream.tail_climb"),
        ({"tail_quantile": 0.99, "tail_climb": 10**9}, "stream.tail_climb"),
    ],
)
def test_check_config_refuses_a_tail_gate_no_export_gives(
    model_path: Path, tmp_path: Path, update: dict, named: str
):
    fine = _with_stream(model_path, tmp_path / "ok.onnx", tail_quantile=0.995, tail_cap=8.0)
    assert _check(tmp_path, fine)[0] == 0
    code, stderr = _check(tmp_path, _with_stream(model_path, tmp_path / "m.onnx", **update))
    assert code == 2, stderr
    assert named in stderr, stderr


def _with_novelty(model: Path, out: Path, **novelty: object) -> Path:
    return _with_stream(model, out, "novelty", **novelty)


def _stream_part(model: Path, part: str) -> dict:
    (entry,) = [p for p in onnx.load(str(model)).metadata_props if p.key == MANIFEST_KEY]
    return json.loads(entry.value)["stream"][part]


@pytest.mark.parametrize(
    ("model", "part", "fields", "cut"),
    [
        ("online_model", "online", ("mean", "scale"), 2),
        ("model_path", "profile", ("mean", "spread"), 1),
    ],
    ids=["online", "profile"],
)
def test_check_config_refuses_a_per_sensor_part_for_another_sensor_count(
    request, tmp_path: Path, model: str, part: str, fields: tuple[str, str], cut: int
):
    """The same for the `online` method's normal model (a feature mean and std per sensor) and
    the daily profile's levels (a mean and a spread per sensor)."""
    source = request.getfixturevalue(model)
    given = _stream_part(source, part)
    shorter = {f: given[f][:-cut] for f in fields}
    code, stderr = _check(tmp_path, _with_stream(source, tmp_path / "m.onnx", part, **shorter))
    assert code == 2, stderr
    assert f"stream.{part}" in stderr and "sensors" in stderr, stderr


@pytest.mark.parametrize("count", [3, 6])
def test_check_config_and_score_refuse_novelty_ranges_for_another_sensor_count(
    model_path: Path, sim_data, tmp_path: Path, count: int
):
    """Range novelty (#15) for 3 (or 6) sensors in a 5-sensor model: `check-config` (and so a
    push's checks) said ok, then the layer refused it where the pipeline is built: `run`
    stopped at start with a traceback, and `edge-agent score` printed its header and a
    traceback."""
    bad = _with_novelty(model_path, tmp_path / "m.onnx", low=[0.0] * count, high=[1.0] * count)
    code, stderr = _check(tmp_path, bad)
    assert code == 2, stderr
    assert "stream.novelty" in stderr and f"{count} sensors" in stderr, stderr
    scored = run_cli("agent", "score", str(bad), str(sim_data.live_csv))
    assert scored.returncode == 2, scored.stderr
    assert scored.stdout == "" and "Traceback" not in scored.stderr, scored.stderr
    assert "stream.novelty" in scored.stderr, scored.stderr
