"""`edge-trainer report`: one self-contained HTML page that shows what a model sees in a CSV.

The pictures are the ones the tutorials draw by hand (sensors with flagged points and labelled
anomalies, the score against the level thresholds, the score histogram, what drove the top
alerts, and with labels the confusion matrix and precision-recall curve). Every picture is a PNG
embedded as a data URI and the page has no script, so the file can be mailed or archived and
opens anywhere without a network. Scores come from the exported graph through the agent's
scorer, so the page shows what the gateway would compute.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agent.atomic import write_atomically
from agent.model.manifest import Manifest
from agent.model.table import Table
from trainer.api import score_rows
from trainer.evaluate import open_scored, score_metrics
from trainer.metrics import precision_recall_curve

_LEVEL_COLOURS = {"info": "#d4a017", "warning": "#e67e22", "critical": "#c0392b"}
_WIDTH = 11.0  # inches at 100 dpi: 1100 px, readable on a laptop and in print
MAX_SENSORS_DRAWN = 24  # one panel each; a model with more shows those that drive the alerts


@dataclass(frozen=True)
class Episode:
    """A run of consecutive flagged rows: what the gateway would raise as one alert."""

    start: int
    end: int  # inclusive
    peak: int

    @property
    def rows(self) -> int:
        return self.end - self.start + 1


@dataclass
class Scored:
    manifest: Manifest
    source: str
    x: np.ndarray  # datetime64 or row numbers
    x_label: str
    values: np.ndarray  # [rows, sensors]
    score: np.ndarray
    contributions: np.ndarray
    labels: np.ndarray | None
    from_row: int

    @property
    def flagged(self) -> np.ndarray:
        return self.score >= self.manifest.alert_threshold

    def counted(self, a: np.ndarray) -> np.ndarray:
        return a[self.from_row :]


def build(
    model: Path, data: Path, label_column: str | None = None, from_row: int = 0, top: int = 5
) -> str:
    """The report as one HTML string."""
    scored = _score(model, data, label_column, from_row)
    episodes = top_episodes(scored.score, scored.flagged, from_row, top)
    sections = [
        _section("Model", _model_table(scored)),
        _section(
            "Sensors over time",
            _img(sensors_figure(scored), "each sensor over time with flagged points")
            + _drawn_note(scored)
            + "<p>Red dots: rows scored at or above the alert threshold. Shaded red: rows "
            "labelled anomalous. Shaded grey: rows before <code>--from-row</code>, "
            "not counted.</p>",
        ),
        _section(
            "Score over time",
            _img(score_figure(scored), "the score over time with the level thresholds"),
        ),
        _section("Score histogram", _img(histogram_figure(scored), "histogram of the scores")),
        _section("Top alerts", _episodes_html(scored, episodes)),
    ]
    if scored.labels is not None:
        sections.append(_section("Against the labels", _labelled_html(scored)))
    title = f"{scored.manifest.model_id} on {scored.source}"
    return _page(title, "\n".join(sections))


def write(html_text: str, out: Path) -> Path:
    """Atomically, like a model: a reader never sees half a page."""
    return write_atomically(out, html_text.encode("utf-8"))


def top_episodes(score: np.ndarray, flagged: np.ndarray, from_row: int, top: int) -> list[Episode]:
    """The `top` runs of flagged rows (from `from_row` on) with the highest peak scores."""
    episodes = [
        Episode(int(a), int(b), int(a + np.argmax(score[a : b + 1])))
        for a, b in _runs(flagged[from_row:], offset=from_row)
    ]
    episodes.sort(key=lambda e: (-score[e.peak], e.start))
    return episodes[:top]


# -- scoring -----------------------------------------------------------------------------------


def _score(model: Path, data: Path, label_column: str | None, from_row: int) -> Scored:
    scorer, table = open_scored(model, data, label_column, from_row)
    values = table.matrix(scorer.manifest.sensor_names)
    score, contributions = score_rows(scorer, values)
    x, x_label = _time_axis(table)
    return Scored(
        manifest=scorer.manifest,
        source=Path(data).name,
        x=x,
        x_label=x_label,
        values=values,
        score=score,
        contributions=contributions,
        labels=table.labels(label_column) if label_column else None,
        from_row=from_row,
    )


def _time_axis(table: Table) -> tuple[np.ndarray, str]:
    """Timestamps when the time column holds ISO 8601 times or unix seconds, else row numbers."""
    rows = np.arange(table.rows)
    if table.time_column is None:
        return rows, "row"
    cells = table.timestamps()
    try:
        seconds = np.array([float(c) for c in cells])
    except ValueError:
        seconds = None
    if seconds is not None:
        if not ((seconds >= 1e8) & (seconds < 1e11)).all():  # not plausibly unix seconds
            return rows, "row"
        return (seconds * 1000).astype("datetime64[ms]"), f"{table.time_column} (UTC)"
    try:
        stamps = [datetime.fromisoformat(c) for c in cells]
    except ValueError:
        return rows, "row"
    utc = [t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t for t in stamps]
    return np.array(utc, dtype="datetime64[ms]"), f"{table.time_column} (UTC)"


# -- figures -----------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _shade(ax: object, s: Scored) -> None:
    """Labelled anomalies in red, the uncounted training stretch in grey."""
    if s.from_row:
        ax.axvspan(s.x[0], s.x[s.from_row], color="#999999", alpha=0.15, lw=0)
    if s.labels is not None:
        for a, b in _runs(s.labels.astype(bool)):
            ax.axvspan(s.x[a], s.x[b], color="#e74c3c", alpha=0.12, lw=0)


def shown_sensors(s: Scored) -> list[int]:
    """Every sensor up to MAX_SENSORS_DRAWN; past that the ones that drive the flagged rows
    most (by mean contribution), in the model's order."""
    n = len(s.manifest.sensor_names)
    if n <= MAX_SENSORS_DRAWN:
        return list(range(n))
    rows = s.counted(s.flagged)
    share = s.counted(s.contributions)[rows] if rows.any() else s.counted(s.contributions)
    top = np.argsort(-share.mean(axis=0), kind="stable")[:MAX_SENSORS_DRAWN]
    return sorted(int(j) for j in top)


def sensors_figure(s: Scored) -> Figure:
    names = s.manifest.sensor_names
    drawn = shown_sensors(s)
    fig = Figure(figsize=(_WIDTH, 1.6 * len(drawn) + 0.6))
    axes = fig.subplots(len(drawn), 1, sharex=True, squeeze=False)[:, 0]
    flagged = s.flagged
    for ax, j in zip(axes, drawn, strict=True):
        _shade(ax, s)
        ax.plot(s.x, s.values[:, j], lw=0.8, color="#2c3e50")
        ax.scatter(s.x[flagged], s.values[flagged, j], s=6, color="#c0392b", zorder=3)
        ax.set_ylabel(names[j], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel(s.x_label)
    fig.align_ylabels(axes)
    return fig


def score_figure(s: Scored) -> Figure:
    fig = Figure(figsize=(_WIDTH, 3.2))
    ax = fig.subplots()
    _shade(ax, s)
    ax.plot(s.x, s.score, lw=0.8, color="#2c3e50", label="score")
    _level_lines(ax.axhline, s.manifest)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("score")
    ax.set_xlabel(s.x_label)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    return fig


def histogram_figure(s: Scored) -> Figure:
    fig = Figure(figsize=(_WIDTH / 2, 3.2))
    ax = fig.subplots()
    counted = s.score[max(s.from_row, s.manifest.window - 1) :]
    ax.hist(counted, bins=50, range=(0, 1), color="#34495e", log=True)
    _level_lines(ax.axvline, s.manifest)
    ax.set_xlabel("score")
    ax.set_ylabel("rows (log scale)")
    ax.legend(fontsize=8)
    return fig


def _level_lines(draw: object, m: Manifest) -> None:
    for level, value in m.thresholds.model_dump().items():
        draw(value, ls="--", lw=1, color=_LEVEL_COLOURS.get(level, "#7f8c8d"), label=level)


def contributions_figure(s: Scored, episodes: list[Episode]) -> Figure:
    names = s.manifest.sensor_names
    fig = Figure(figsize=(_WIDTH, 0.12 * len(names) * len(episodes) + 1.2))
    ax = fig.subplots()
    height = 0.8 / len(episodes)
    y = np.arange(len(names))
    for k, e in enumerate(episodes):
        ax.barh(
            y + k * height,
            s.contributions[e.peak],
            height=height,
            label=f"#{k + 1} peak {s.score[e.peak]:.2f} at {_when(s, e.peak)}",
        )
    ax.set_yticks(y + 0.4 - height / 2, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the score's attribution")
    ax.legend(fontsize=8)
    return fig


def confusion_figure(counts: np.ndarray) -> Figure:
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        colour = "white" if n > counts.max() / 2 else "black"
        ax.text(j, i, f"{n:,}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], ["normal", "anomaly"])
    ax.set_yticks([0, 1], ["normal", "anomaly"])
    ax.set_xlabel("flagged")
    ax.set_ylabel("labelled")
    return fig


def pr_figure(labels: np.ndarray, score: np.ndarray, operating: tuple[float, float]) -> Figure:
    precision, recall, _ = precision_recall_curve(labels, score)
    fig = Figure(figsize=(4.4, 3.6))
    ax = fig.subplots()
    ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post", color="#2c3e50")
    ax.plot(*operating, "o", color="#c0392b", label="alert threshold")
    ax.axhline(labels.mean(), ls=":", color="#7f8c8d", label="chance")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=8, loc="lower left")
    return fig


# -- HTML --------------------------------------------------------------------------------------


def _img(fig: Figure, alt: str) -> str:
    data = base64.b64encode(_png(fig)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _table(rows: list[tuple[str, object]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _drawn_note(s: Scored) -> str:
    drawn, n = len(shown_sensors(s)), len(s.manifest.sensors)
    if drawn == n:
        return ""
    return (
        f"<p>{drawn} of the model's {n} sensors are drawn: those with the highest mean "
        "contribution to the flagged rows.</p>"
    )


def _model_table(s: Scored) -> str:
    m = s.manifest
    levels = ", ".join(f"{k} {v:.2f}" for k, v in m.thresholds.model_dump().items())
    counted = s.counted(s.flagged)
    return _table(
        [
            ("model", f"{m.model_id} version {m.version}, created {m.created_at}"),
            ("algorithm", f"{m.algorithm.name} {m.algorithm.params}"),
            ("sensors", ", ".join(m.sensor_names)),
            ("window", f"{m.window} readings; features {', '.join(m.features)}"),
            ("thresholds", f"alert {m.alert_threshold:.2f}; levels {levels}"),
            ("trained on", f"{m.training.source}: {m.training.rows:,} rows"),
            ("data", f"{s.source}: {len(s.score):,} rows, counted from row {s.from_row:,}"),
            ("flagged", f"{int(counted.sum()):,} of {len(counted):,} counted rows"),
        ]
    )


def _episodes_html(s: Scored, episodes: list[Episode]) -> str:
    if not episodes:
        return "<p>No row reached the alert threshold.</p>"
    names = s.manifest.sensor_names
    rows = []
    for k, e in enumerate(episodes, start=1):
        share = s.contributions[e.peak]
        order = np.argsort(-share, kind="stable")[:3]
        top = ", ".join(f"{names[j]} {share[j]:.0%}" for j in order)
        rows.append(
            f"<tr><td>{k}</td><td>{html.escape(_when(s, e.start))}</td>"
            f"<td>{html.escape(_when(s, e.end))}</td><td>{e.rows:,}</td>"
            f"<td>{s.score[e.peak]:.3f}</td><td>{_level(s.manifest, s.score[e.peak])}</td>"
            f"<td>{html.escape(top)}</td></tr>"
        )
    table = (
        "<table><tr><th>#</th><th>from</th><th>to</th><th>rows</th><th>peak score</th>"
        "<th>level</th><th>top sensors at the peak</th></tr>" + "".join(rows) + "</table>"
    )
    note = (
        "<p>An alert here is a run of consecutive flagged rows; the bars are each sensor's "
        "contribution at the alert's highest score, the same shares an alert's "
        "<code>top_sensors</code> come from (what a share means for each detector: "
        "<code>docs/model-file.md</code>, <em>Contributions</em>).</p>"
    )
    figure = _img(contributions_figure(s, episodes), "per-sensor contributions of the top alerts")
    return table + note + figure


def _labelled_html(s: Scored) -> str:
    labels, flagged, score = s.counted(s.labels), s.counted(s.flagged), s.counted(s.score)
    metrics = score_metrics(labels, score, s.manifest.alert_threshold)
    y, p = labels.astype(bool), flagged
    counts = np.array([[np.sum(~y & ~p), np.sum(~y & p)], [np.sum(y & ~p), np.sum(y & p)]])
    shown = [(k, _metric(k, v)) for k, v in metrics.items()]
    shown = [(k + (" %" if k in ("far", "mar") else ""), v) for k, v in shown]
    pictures = _img(confusion_figure(counts), "confusion matrix") + _img(
        pr_figure(labels, score, (metrics["recall"], metrics["precision"])),
        "precision-recall curve",
    )
    return _table(shown) + f'<div class="row">{pictures}</div>'


def _metric(name: str, value: float) -> str:
    if name == "n":
        return f"{int(value):,}"
    if np.isnan(value):
        return "n/a (the labels hold one class only)"
    return f"{value:.3f}"


def _when(s: Scored, row: int) -> str:
    x = s.x[row]
    if np.issubdtype(s.x.dtype, np.datetime64):
        return str(x.astype("datetime64[s]")).replace("T", " ")
    return f"row {int(x):,}"


def _level(m: Manifest, score: float) -> str:
    reached = [k for k, v in m.thresholds.model_dump().items() if score >= v]
    return reached[-1] if reached else "-"


def _runs(mask: np.ndarray, offset: int = 0) -> list[tuple[int, int]]:
    """(first, last) index (plus `offset`) of each run of True."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return list(zip(firsts + offset, lasts + offset, strict=True))


def _page(title: str, body: str) -> str:
    made = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f5f5f5; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
.row {{ display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>edge-trainer report, made {made}. Scores are computed by the model's ONNX graph through the
agent's scorer, exactly as the gateway computes them.</p>
{body}
</body></html>
"""
