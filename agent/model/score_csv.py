"""`edge-agent score`'s output: one CSV row per input row: its time, score, 0/1 flag, graph score.

`score` is the streaming layer's (agent.model.stream), what the agent compares with the alert
threshold; `anomaly` is 1 where it reaches it; `graph_score` is the model graph's own score of
the window ending at the row, before the stream layer (what the Python API's
`AnomalyDetector.score` gives). It comes last so that readers of the first three columns by
position keep working.

The first column is the input's time column under its own name (the reader's rule in
`agent.model.table`: a column named ts, time, timestamp, datetime or date, else the first column
of ISO 8601 times), copied as written, so the scores join back to the file by that column; a
file without one gets `row`, the 0-based row number. Rows before the first full window have an
empty score and flag 0. A window holding a reading past float32's range (1e300: infinite in
the window, as on the gateway) has a `graph_score` of nan; its `score` is the layer's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TextIO

from agent.model.offline import RowScore, scored_table
from agent.model.score import Scorer
from agent.model.table import Table

ROW_COLUMN = "row"
# Scores print with six decimals; above this, with six significant digits of 1 − score, so
# that windows far past the threshold still rank in the CSV (issue 15: 48 rows at 1.000000).
_NEAR_ONE = 0.999


def score_text(score: float) -> str:
    if score != score:  # the graph's, of a window holding a reading past float32's range
        return "nan"
    if score < _NEAR_ONE:
        return f"{score:.6f}"
    if score >= 1.0:
        return "1"
    decimals = min(17, 5 - math.floor(math.log10(1.0 - score)))
    return f"{score:.{decimals}f}"


def write_scores(scorer: Scorer, table: Table, out: TextIO) -> int:
    """Write the header and one line per row of `table`; returns the number of rows."""
    threshold = scorer.manifest.alert_threshold
    scores = scored_table(scorer, table)  # names a missing sensor column before any output
    out.write(f"{_csv_field(table.time_column or ROW_COLUMN)},score,anomaly,graph_score\n")
    return sum(1 for _ in _lines(table.timestamps(), scores, threshold, out))


def _lines(
    stamps: list[str], scores: Iterable[RowScore | None], threshold: float, out: TextIO
) -> Iterable[None]:
    for stamp, row in zip(stamps, scores, strict=True):
        if row is None:
            out.write(f"{_csv_field(stamp)},,0,\n")
        else:
            flagged = int(row.score >= threshold)
            text = f"{score_text(row.score)},{flagged},{score_text(row.graph)}"
            out.write(f"{_csv_field(stamp)},{text}\n")
        yield None


def _csv_field(text: str) -> str:
    """Quoted when it holds a separator, a quote or a line break (a time column with commas)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
