"""`edge-trainer report`: the page renders in a real headless browser and its pictures load."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from trainer.report import top_episodes

# Appended to a copy of the report: once the page has loaded, write what each image did.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify([...document.images].map(
    i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})));
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-headless-shell", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed: run `make test`, which installs Debian's chromium")


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    command = [_chromium(), "--headless", "--disable-gpu", "--no-first-run", *args]
    if os.geteuid() == 0:
        command.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _images_in_browser(page: Path, tmp_path: Path) -> list[dict]:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8") + _PROBE, encoding="utf-8")
    done = _browser("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading: {done.stdout[-500:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_labelled_report_renders_with_every_picture(sim_data, model_path, tmp_path):
    out = tmp_path / "report.html"
    made = run_cli(
        "trainer", "report", str(model_path), str(sim_data.live_csv), "--out", str(out),
        "--label-column", "anomaly", "--from-row", "50",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"wrote {out}" in made.stdout
    page = out.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "url(" not in page and "@import" not in page
    for heading in ("Sensors over time", "Score over time", "Score histogram", "Top alerts",
                    "Against the labels"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in page

    images = _images_in_browser(out, tmp_path)
    assert [i["alt"] for i in images] == [
        "each sensor over time with flagged points",
        "the score over time with the level thresholds",
        "histogram of the scores",
        "per-sensor contributions of the top alerts",
        "confusion matrix",
        "precision-recall curve",
    ]
    for image in images:
        assert image["complete"] and image["width"] > 200 and image["height"] > 200, image

    shot = tmp_path / "shot.png"
    rendered = _browser("--window-size=1200,3000", f"--screenshot={shot}", out.as_uri())
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_unlabelled_report_leaves_out_what_needs_labels(sim_data, model_path, tmp_path):
    out = tmp_path / "report.html"
    made = run_cli("trainer", "report", str(model_path), str(sim_data.live_csv), "--out", str(out))
    assert made.returncode == 0, made.stderr
    page = out.read_text(encoding="utf-8")
    assert "Against the labels" not in page and "confusion matrix" not in page
    images = _images_in_browser(out, tmp_path)
    assert len(images) == 4 and all(i["complete"] and i["width"] > 200 for i in images)


def test_unix_second_times_make_the_time_axis(sim_data, model_path, tmp_path):
    lines = sim_data.live_csv.read_text().splitlines()
    header, rows = lines[0].split(","), [r.split(",") for r in lines[1:]]
    at = header.index("timestamp")
    for i, row in enumerate(rows):
        row[at] = str(1_767_225_600 + 60 * i)
    data = tmp_path / "unix.csv"
    data.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    out = tmp_path / "report.html"
    made = run_cli("trainer", "report", str(model_path), str(data), "--out", str(out))
    assert made.returncode == 0, made.stderr
    page = out.read_text(encoding="utf-8")
    assert "<td>2026-01-0" in page and "<td>row " not in page  # the top alerts' times


def test_report_errors_name_the_problem(sim_data, model_path, tmp_path):
    out = tmp_path / "report.html"
    args = ("trainer", "report", str(model_path), str(sim_data.live_csv), "--out", str(out))
    no_label = run_cli(*args, "--label-column", "verdict")
    assert no_label.returncode == 2 and "'verdict'" in no_label.stderr
    far_row = run_cli(*args, "--from-row", "99999")
    assert far_row.returncode == 2 and "--from-row 99999" in far_row.stderr
    no_model = run_cli("trainer", "report", str(tmp_path / "none.onnx"), str(sim_data.live_csv),
                       "--out", str(out))  # fmt: skip
    assert no_model.returncode == 2 and "none.onnx" in no_model.stderr
    short = tmp_path / "short.csv"
    short.write_text("\n".join(sim_data.live_csv.read_text().splitlines()[:4]) + "\n")
    too_short = run_cli("trainer", "report", str(model_path), str(short), "--out", str(out))
    assert too_short.returncode == 2 and "fewer than the model's window of 10" in too_short.stderr
    evaluated = run_cli("trainer", "evaluate", str(model_path), str(short), "--label-column",
                        "anomaly")  # fmt: skip
    assert evaluated.returncode == 2 and "nothing to score" in evaluated.stderr
    assert not out.exists()


def test_top_alerts_are_runs_of_flagged_rows_by_peak_score():
    score = np.array([0.9, 0.1, 0.6, 0.7, 0.2, 0.95, 0.8, 0.1, 0.55])
    flagged = score >= 0.5
    episodes = top_episodes(score, flagged, from_row=1, top=2)
    assert [(e.start, e.end, e.peak) for e in episodes] == [(5, 6, 5), (2, 3, 3)]
    assert top_episodes(score, np.zeros(9, bool), 0, 5) == []
