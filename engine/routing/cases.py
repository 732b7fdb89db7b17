"""Case files (CSV or Parquet, by suffix) in and out, and the rules for their columns.

Every rule raises `InvalidInput` naming the column and, for a value, the row; rows are
counted from 1 at the first data row (the CSV header is not a row), so a row named here is
the file's row in a spreadsheet minus its header line.

- A file is `.csv` or `.parquet`; a CSV is read with every column as text, quoted values may
  span lines (case bodies do), the encoding is UTF-8.
- A text column may hold nulls or empty values: they are empty text.
- A label column (queue, priority) may not: an empty label is an error naming its row; a
  label with fewer than two examples is an error naming the label (one example can neither
  be learnt from nor held out), and fewer than two distinct labels is an error.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import InvalidInput

SUFFIXES = (".csv", ".parquet")
MIN_EXAMPLES = 2
BATCH_ROWS = 65_536
"""Rows `route predict` reads, routes and writes at a time: its memory is bounded by this,
not by the file."""


def _suffix(path: Path, flag: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInput(f"{flag} {path}: expected a .csv or .parquet file, is {suffix!r}", flag)
    return suffix


def _csv_options(path: Path) -> dict[str, Any]:
    with path.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return {
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        ),
    }


def _unreadable(path: Path, suffix: str, flag: str, exc: Exception) -> InvalidInput:
    kind = "Parquet" if suffix == ".parquet" else "CSV"
    return InvalidInput(f"{flag} {path}: not a readable {kind} file ({exc})", flag)


_READ_ERRORS = (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error)


def _existing(path: str | Path, flag: str) -> tuple[Path, str]:
    path = Path(path)
    suffix = _suffix(path, flag)
    if not path.is_file():
        raise InvalidInput(f"{flag} {path}: no such file", flag)
    return path, suffix


def read_cases(path: str | Path, flag: str = "--cases") -> pa.Table:
    """The table in `path`; a missing, unreadable or wrongly named file is InvalidInput."""
    path, suffix = _existing(path, flag)
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        return pacsv.read_csv(path, **_csv_options(path))
    except _READ_ERRORS as exc:
        raise _unreadable(path, suffix, flag, exc) from exc


def read_batches(
    path: str | Path, flag: str = "--cases", rows: int = BATCH_ROWS
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The file's schema and its rows in batches of about `rows`, so a large file is never
    held whole; a file that turns out unreadable part way raises InvalidInput then."""
    path, suffix = _existing(path, flag)
    try:
        if suffix == ".parquet":
            pf = pq.ParquetFile(path)
            schema, source = pf.schema_arrow, pf.iter_batches(batch_size=rows)
        else:
            opts = _csv_options(path)
            # ~200 bytes a case: a block of this size holds about `rows` of them
            read = pacsv.ReadOptions(block_size=max(1 << 20, rows * 200))
            reader = pacsv.open_csv(path, read_options=read, **opts)
            schema, source = reader.schema, iter(reader)
    except _READ_ERRORS as exc:
        raise _unreadable(path, suffix, flag, exc) from exc

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from source
        except _READ_ERRORS as exc:
            raise _unreadable(path, suffix, flag, exc) from exc

    return schema, batches()


def write_cases(table: pa.Table, path: str | Path, flag: str = "--out") -> Path:
    """Write `table` as CSV or Parquet by the suffix of `path` (parents created)."""
    with CaseWriter(path, table.schema, flag) as w:
        w.write(table)
    return Path(path)


class CaseWriter:
    """Writes tables of one schema to a CSV or Parquet file (by suffix) as they come; the
    file appears under its name only when the writer closes without an error."""

    def __init__(self, path: str | Path, schema: pa.Schema, flag: str = "--out") -> None:
        self.path = Path(path)
        self._suffix = _suffix(self.path, flag)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._writer: Any = (
            pacsv.CSVWriter(self._tmp, schema)
            if self._suffix == ".csv"
            else pq.ParquetWriter(self._tmp, schema)
        )

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def __enter__(self) -> CaseWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self._writer.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def require(names: list[str], columns: tuple[str, ...], where: str) -> None:
    for c in columns:
        if c not in names:
            raise InvalidInput(f"{where}: no column '{c}' (has {', '.join(names)})", c)


def _strings(table: pa.Table, column: str) -> pa.ChunkedArray:
    col = table.column(column)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"column '{column}' of type {col.type} is not text", column) from exc


def texts(table: pa.Table, columns: tuple[str, ...], where: str) -> list[list[str]]:
    """One list per column of the rows' text, null as ''."""
    require(table.column_names, columns, where)
    return [[v or "" for v in _strings(table, c).to_pylist()] for c in columns]


def labels(table: pa.Table, column: str, where: str) -> list[str]:
    """The column's labels, stripped; see the module's rules."""
    require(table.column_names, (column,), where)
    values = [None if v is None else v.strip() for v in _strings(table, column).to_pylist()]
    for row, v in enumerate(values, start=1):
        if not v:
            raise InvalidInput(f"{where}: column '{column}', row {row}: empty label", column)
    counts = Counter(values)
    rare = sorted((n, str(v)) for v, n in counts.items() if n < MIN_EXAMPLES)
    if rare:
        n, v = rare[0]
        more = f" (and {len(rare) - 1} more)" if len(rare) > 1 else ""
        raise InvalidInput(
            f"{where}: column '{column}': label {v!r} has {n} example, needs at least "
            f"{MIN_EXAMPLES}{more}",
            column,
        )
    if len(counts) < 2:
        raise InvalidInput(
            f"{where}: column '{column}' needs at least 2 distinct labels, has {len(counts)}",
            column,
        )
    return [str(v) for v in values]
