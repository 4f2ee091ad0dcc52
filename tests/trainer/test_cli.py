"""`edge-trainer` as users run it."""

from __future__ import annotations

import json
from pathlib import Path

from agent.model.score import Scorer
from agent.model.table import read_table
from tests.conftest import run_cli, wait_for
from trainer import AnomalyDetector
from trainer.detectors import DEFAULT_ALGORITHM
from trainer.train import _Stages


def test_simulate_then_train_writes_a_model_with_its_manifest(tmp_path: Path):
    data = tmp_path / "d.csv"
    sim = run_cli(
        "trainer",
        "simulate",
        "--out",
        str(data),
        "--rows",
        "1500",
        "--faults",
        "spike,noise:2",
        "--seed",
        "4",
    )
    assert sim.returncode == 0, sim.stderr
    table = read_table(data)
    assert table.rows == 1500 and table.labels("anomaly").sum() > 0
    assert table.sensor_columns() == [
        "flow_lpm",
        "pressure_bar",
        "current_a",
        "temperature_c",
        "vibration_mms",
    ]
    faults = {f.split(":")[0] for f in table.text["fault"] if f}
    assert faults == {"spike", "noise"}

    out = tmp_path / "m.onnx"
    tr = run_cli(
        "trainer",
        "train",
        str(data),
        "--out",
        str(out),
        "--label-column",
        "anomaly",
        "--train-rows",
        "400",
        "--window",
        "6",
        "--json",
    )
    assert tr.returncode == 0, tr.stderr
    summary = json.loads(tr.stdout)
    assert summary["model_id"] == "m" and summary["window"] == 6
    assert summary["training_rows"] == 400 and "anomaly" not in summary["sensors"]
    assert {"precision", "recall", "f1", "far", "mar"} <= summary["metrics"].keys()
    assert out.stat().st_size == summary["model_bytes"]


def test_train_errors_name_the_problem(tmp_path: Path):
    data = tmp_path / "d.csv"
    data.write_text("ts;a;b\n" + "".join(f"2026-01-01T00:00:{i:02d}Z;{i};x\n" for i in range(40)))
    bad_sensor = run_cli(
        "trainer", "train", str(data), "--out", str(tmp_path / "m.onnx"), "--sensors", "a,b"
    )
    assert bad_sensor.returncode == 2 and "'b'" in bad_sensor.stderr
    bad_window = run_cli(
        "trainer", "train", str(data), "--out", str(tmp_path / "m.onnx"), "--window", "1",
        "--algorithm", "pca",
    )  # fmt: skip
    assert bad_window.returncode == 2 and "--window" in bad_window.stderr
    missing = run_cli("trainer", "train", str(tmp_path / "none.csv"), "--out", "x.onnx")
    assert missing.returncode == 2 and "none.csv" in missing.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_train_reports_its_stages_on_stderr_and_keeps_stdout_for_the_summary(sim_data, tmp_path):
    done = run_cli(
        "trainer", "train", str(sim_data.train_csv), "--out", str(tmp_path / "m.onnx"), "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parity_max_abs_error"] <= 1e-4
    stages = [line for line in done.stderr.splitlines() if line.startswith("edge-trainer: ")]
    assert any(f"fitting {DEFAULT_ALGORITHM} on" in line for line in stages)
    assert any("checking the graph against the reference" in line for line in stages)
    assert sum("done in" in line for line in stages) == 4


def test_ensemble_members_are_chosen_on_the_command_line(sim_data, tmp_path: Path):
    out = tmp_path / "vote.onnx"
    done = run_cli(
        "trainer", "train", str(sim_data.train_csv), "--out", str(out), "--json",
        "--algorithm", "ensemble_vote", "--members", "pca,isolation_forest,autoencoder",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["algorithm"] == "ensemble_vote" and summary["parity_max_abs_error"] <= 1e-4
    params = Scorer.load(out).manifest.algorithm.params
    assert params["members"] == "pca,isolation_forest,autoencoder" and params["combine"] == "vote"
    loaded = AnomalyDetector.load(out)
    assert loaded.members == ["pca", "isolation_forest", "autoencoder"]

    base = ("trainer", "train", str(sim_data.train_csv), "--out", str(tmp_path / "x.onnx"))
    for args, named in [
        (("--algorithm", "pca", "--members", "pca,autoencoder"), "'pca'"),
        (("--algorithm", "ensemble", "--members", "pca"), "two or more"),
        (("--algorithm", "ensemble", "--members", "pca,ensemble"), "two or more"),
        (("--algorithm", "ensemble", "--members", "pca,kmeans"), "kmeans"),
        (("--algorithm", "ensemble", "--members", "pca,zscore,pca"), "repeat"),
    ]:
        refused = run_cli(*base, *args)
        assert refused.returncode == 2 and named in refused.stderr, (args, refused.stderr)
    assert not (tmp_path / "x.onnx").exists()


def test_a_long_stage_says_it_is_still_running_until_it_ends():
    heard: list[str] = []
    with _Stages(heard.append, every=0.02) as step:
        step.begin("fitting one_class_svm on 90000 windows")
        wait_for(lambda: sum("still fitting" in h for h in heard) >= 2, 10, "two still lines")
        step.end()
    assert heard[0] == "fitting one_class_svm on 90000 windows ..."
    assert heard[-1].startswith("  done in ") and not step._ticker
