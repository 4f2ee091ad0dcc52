"""Reading sensor CSV files: separator sniffing, the timestamp column, numeric sensor columns.

Shared by `edge-agent score` and the trainer so that both read a file the same way. Numpy and
the csv module only: the gateway has no pandas.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("anomaly", "changepoint")
_TIME_NAMES = ("ts", "time", "timestamp", "datetime", "date")
_SEPARATORS = ",;\t|"


class TableError(ValueError):
    """The file cannot be read as a sensor table; the message names the file and the problem."""


@dataclass(frozen=True)
class Table:
    """A CSV file's columns: raw text per column, plus which ones hold numbers."""

    path: Path
    header: list[str]
    text: dict[str, list[str]]
    time_column: str | None

    @property
    def rows(self) -> int:
        return len(next(iter(self.text.values()), []))

    def numeric_columns(self) -> list[str]:
        return [c for c in self.header if c != self.time_column and _all_numbers(self.text[c])]

    def sensor_columns(self, label_column: str | None = None) -> list[str]:
        """Every numeric column except the timestamp and the label columns."""
        labels = {*LABEL_COLUMNS, *([label_column] if label_column else [])}
        return [c for c in self.numeric_columns() if c not in labels]

    def matrix(self, columns: list[str]) -> np.ndarray:
        """float64 [rows, len(columns)], failing with the column and row of a bad cell."""
        missing = [c for c in columns if c not in self.text]
        if missing:
            raise TableError(f"{self.path}: no column(s) {missing}; columns are {self.header}")
        out = np.empty((self.rows, len(columns)), dtype=np.float64)
        for j, name in enumerate(columns):
            for i, cell in enumerate(self.text[name]):
                try:
                    out[i, j] = float(cell)
                except ValueError:
                    raise TableError(
                        f"{self.path}: column {name!r} row {i + 2}: not a number: {cell!r}"
                    ) from None
        if not np.isfinite(out).all():
            i, j = np.argwhere(~np.isfinite(out))[0]
            raise TableError(f"{self.path}: column {columns[j]!r} row {i + 2}: not finite")
        return out

    def labels(self, column: str) -> np.ndarray:
        """0/1 labels from a numeric column (any non-zero value is an anomaly)."""
        return (self.matrix([column])[:, 0] != 0).astype(np.int8)

    def timestamps(self) -> list[str]:
        if self.time_column is None:
            return [str(i) for i in range(self.rows)]
        return self.text[self.time_column]

    def times(self) -> np.ndarray | None:
        """Each row's time in epoch seconds (float64), for what follows the clock (the stream's
        daily profile); None when the file has no time column or a cell is not a time. ISO 8601
        times without an offset are read as UTC; numbers are epoch seconds, or milliseconds
        from 1e11 up (a seconds count that large is past the year 5000). A bad cell is logged
        (row and text): the model then trains, or is scored, without the profile."""
        if self.time_column is None:
            return None
        out = np.empty(self.rows, dtype=np.float64)
        for i, cell in enumerate(self.text[self.time_column]):
            stamp = _epoch_seconds(cell.strip())
            if stamp is None:
                log.warning(
                    "%s: column %r row %d: %r is not a time; no daily profile from this file",
                    self.path,
                    self.time_column,
                    i + 2,
                    cell[:40],
                )
                return None
            out[i] = stamp
        return out


def read_table(path: str | Path) -> Table:
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            sample = f.read(16384)
            f.seek(0)
            rows = list(csv.reader(f, delimiter=_sniff_separator(sample, path)))
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not a UTF-8 text file") from exc
    except csv.Error as exc:  # a NUL byte, a field over the csv module's limit
        raise TableError(f"{path}: not a CSV table: {exc}") from exc
    return _table(rows, path)


def table_from_text(text: str, name: str) -> Table:
    """A table from text already in memory (a pipe's bytes, decoded by the caller, who bounds
    them); `name` stands for the file in every message (e.g. `<stdin>`)."""
    path = Path(name)
    text = text.removeprefix("\ufeff")
    try:
        stream = io.StringIO(text, newline="")
        rows = list(csv.reader(stream, delimiter=_sniff_separator(text[:16384], path)))
    except csv.Error as exc:
        raise TableError(f"{path}: not a CSV table: {exc}") from exc
    return _table(rows, path)


def _table(rows: list[list[str]], path: Path) -> Table:
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise TableError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise TableError(f"{path}: duplicate column names in header {header}")
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TableError(f"{path}: row {n} has {len(row)} fields, header has {len(header)}")
    text = {name: [r[j].strip() for r in rows[1:]] for j, name in enumerate(header)}
    return Table(path=path, header=header, text=text, time_column=_find_time_column(header, text))


def _sniff_separator(sample: str, path: Path) -> str:
    first_line = sample.splitlines()[0] if sample else ""
    try:
        return csv.Sniffer().sniff(first_line, delimiters=_SEPARATORS).delimiter
    except csv.Error:
        if first_line:
            return ","
        raise TableError(f"{path}: the file is empty") from None


def _find_time_column(header: list[str], text: dict[str, list[str]]) -> str | None:
    for name in header:
        if name.lower() in _TIME_NAMES:
            return name
    for name in header:
        if text[name] and not _all_numbers(text[name][:50]) and _is_iso_time(text[name][0]):
            return name
    return None


def _is_iso_time(cell: str) -> bool:
    try:
        datetime.fromisoformat(cell)
    except ValueError:
        return False
    return True


def _all_numbers(cells: list[str]) -> bool:
    if not cells:
        return False
    try:
        for cell in cells:
            float(cell)
    except ValueError:
        return False
    return True


def _epoch_seconds(cell: str) -> float | None:
    try:
        number = float(cell)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(cell)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(number):
        return None
    return number / 1000.0 if abs(number) >= 1e11 else number
