"""Reading a NAB folder as NAB lays it out: `data/<category>/<file>.csv` (timestamp,value) and
`labels/combined_windows.json` (each file's anomaly windows as [start, end] timestamps).

Timestamps carry no zone and are read as they are (one NAB file has an hour out of order; the
rows are scored in file order). A window's edge is the first row stamped with it, as in NAB's
scorer; an edge between rows (NAB's scorer would fail on it) moves inward to the nearest row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.model.table import Table, TableError, read_table
from trainer.nab.score import ScoringCorpus, layout

WINDOWS_FILE = Path("labels") / "combined_windows.json"


class CorpusError(ValueError):
    """The folder is not a NAB corpus; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Series:
    name: str  # "category/file.csv", NAB's key for the file
    table: Table
    values: np.ndarray  # float64, one per row
    windows: tuple[tuple[int, int], ...]  # inclusive row ranges

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass(frozen=True)
class Corpus:
    root: Path
    series: dict[str, Series]
    scoring: ScoringCorpus

    def categories(self) -> dict[str, list[str]]:
        """File names by category, in the corpus's order."""
        out: dict[str, list[str]] = {}
        for name, series in self.series.items():
            out.setdefault(series.category, []).append(name)
        return out


def load_corpus(root: Path) -> Corpus:
    """Every labelled file under `root/data`, in name order, with its windows placed on rows."""
    windows = _read_windows(root / WINDOWS_FILE)
    data = root / "data"
    if not data.is_dir():
        raise CorpusError(f"{root}: no data/ folder (expected NAB's data/<category>/<file>.csv)")
    found = {p.relative_to(data).as_posix(): p for p in sorted(data.glob("*/*.csv"))}
    unlabelled = sorted(set(found) - set(windows))
    if unlabelled:
        raise CorpusError(f"{root / WINDOWS_FILE}: no windows for {', '.join(unlabelled[:5])}")
    missing = sorted(set(windows) - set(found))
    if missing:
        raise CorpusError(f"{data}: labelled files missing: {', '.join(missing[:5])}")
    if not found:
        raise CorpusError(f"{data}: no CSV files")
    series = {name: _read_series(name, found[name], windows[name]) for name in sorted(found)}
    scoring = ScoringCorpus({n: layout(len(s.values), s.windows) for n, s in series.items()})
    return Corpus(root, series, scoring)


def _read_windows(path: Path) -> dict[str, list[tuple[str, str]]]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorpusError(f"{path}: missing (NAB's labels/combined_windows.json)") from None
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CorpusError(f"{path}: expected an object of file name -> windows")
    out = {}
    for name, spans in raw.items():
        if not isinstance(spans, list) or not all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(t, str) for t in s)
            for s in spans
        ):
            raise CorpusError(f"{path}: {name}: windows must be [[start, end], ...] timestamps")
        out[name] = [(a, b) for a, b in spans]
    return out


def _read_series(name: str, path: Path, spans: list[tuple[str, str]]) -> Series:
    table = read_table(path)
    if "value" not in table.header or table.time_column is None:
        raise CorpusError(f"{path}: expected columns timestamp,value; found {table.header}")
    values = table.matrix(["value"])[:, 0]
    stamps = _times(path, table.timestamps())
    if len(spans) > len(stamps):
        raise CorpusError(f"{path}: {len(spans)} windows for {len(stamps)} rows")
    rows: list[tuple[int, int]] = []
    for start, end in spans:
        a = _row_at(stamps, _times(path, [start])[0], 0)
        b = _row_at(stamps, _times(path, [end])[0], a, after=True) if a < len(stamps) else a
        if not a <= b < len(stamps):
            raise CorpusError(f"{path}: window [{start}, {end}] holds no row")
        if rows and a <= rows[-1][1]:
            raise CorpusError(f"{path}: window [{start}, {end}] overlaps or precedes the last")
        rows.append((a, b))
    return Series(name, table, values, tuple(rows))


def _row_at(stamps: np.ndarray, when: np.datetime64, first: int, after: bool = False) -> int:
    """The first row from `first` stamped `when`, as NAB finds a window's edge. An edge between
    rows: the first row after a start, the last row before an end."""
    rest = stamps[first:]
    exact = np.flatnonzero(rest == when)
    if len(exact):
        return first + int(exact[0])
    beyond = np.flatnonzero(rest > when)
    at = first + int(beyond[0]) if len(beyond) else len(stamps)
    return at - 1 if after else at


def _times(path: Path, cells: list[str]) -> np.ndarray:
    try:
        return np.array([c.strip().replace(" ", "T") for c in cells], dtype="datetime64[us]")
    except ValueError as exc:
        raise TableError(f"{path}: timestamp not readable: {exc}") from None
