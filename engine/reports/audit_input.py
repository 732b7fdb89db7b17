"""Reading a history for the data audit: each column as the file has it, then as the checks
need it.

The audit describes files the trainer may refuse, so it does not conform the table to the
order schema first (`engine.codec.arrow_orders.conform` stops at the first column that does
not fit). It reads Parquet one column at a time and CSV a few columns per pass, as text
(at most `CSV_PASS_BYTES` of the file's text per pass), says for each column whether its
type is the one the engine reads, and converts it for the checks: times and numbers to
float64, text to Arrow strings. Memory is bounded by one pass's columns plus a few arrays
of one number per row.

Only what every check needs must be readable, and that raises `InvalidInput` naming the
column and the row (1-based: row 1 is the first order) or the flag:
- the file (missing, not readable as Parquet or CSV, no rows, a column named twice);
- the required columns `order_id`, `customer_id`, `created_at`, `amount_minor`;
- `created_at` a time on every row; `amount_minor` a number wherever it has a value;
- the label columns, when present: `is_fraud` 0, 1 or empty; `label_known_at` a time or empty.
Anything else that is wrong (a type the engine does not read, text times without a zone) is
a finding of the audit, reported against the column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.codec.arrow_orders import _compatible
from engine.errors import InvalidInput
from engine.orders.schema import HISTORY_SCHEMA, ITEM_FIELDS

REQUIRED = ("order_id", "customer_id", "created_at", "amount_minor")
"""Columns without which the audit has nothing to stand on: what an order is, whose, when,
for how much."""
LABEL, LABEL_TIME = "is_fraud", "label_known_at"
CSV_PASS_BYTES = 256 << 20
"""CSV text held per read pass. A CSV is re-tokenised on every pass, so passes hold as many
columns as fit in this; Parquet is read a column at a time, as its layout allows."""
ZONE = r"(Z|z|[+-]\d\d(:?\d\d)?)$"
"""A zone suffix on an ISO 8601 time: the trainer's CSV reader refuses a time without one."""
TS = pa.timestamp("us", tz="UTC")
_EXPECTED = {f.name: f.type for f in HISTORY_SCHEMA}
_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


@dataclass
class Column:
    """One column of the file, with what the checks read of it."""

    name: str
    file_type: str
    """The type as the file has it (Parquet), or what its text parses as (CSV)."""
    expected: str | None
    """The engine's type for this column; None for a column the engine does not read."""
    problem: str | None
    """Why the engine cannot read the column as it is; None when it can (or does not read it)."""
    null_count: int
    present: np.ndarray
    """bool per row: a value that is neither null, NaN, blank text nor an empty list."""
    numbers: np.ndarray | None = None
    """float64 per row (NaN where missing) for numbers, flags and times (epoch seconds)."""
    text: pa.Array | None = None
    """string per row (null where missing) for text columns."""
    items: pa.Array | None = None
    """The order lines (Parquet `items`)."""
    kind: str = "other"
    """How the checks read it: "time", "number", "text", "items", "empty" (no value at all)
    or "other" (a type the audit does not read)."""
    note: str = ""


def _row(i: int) -> str:
    return f"row {i + 1}"


def _first_refused(arr: pa.Array, convert: Callable[[pa.Array], object]) -> int:
    """Index of the first value `convert` refuses in `arr`, which it refuses as a whole.

    Halving keeps the cost to about one more conversion of the column: the invariant is that
    arr[:lo] converts and arr[lo:hi] does not."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(arr.slice(lo, mid - lo))
            lo = mid
        except _ERRORS:
            hi = mid
    return lo


def _strings(a: pa.Array) -> pa.Array:
    return a.cast(pa.string()) if pa.types.is_large_string(a.type) else a


def _blank_as_null(a: pa.Array) -> pa.Array:
    """Text with surrounding blanks removed and empty text as null (as CSV reads numbers)."""
    s = pc.utf8_trim_whitespace(a)
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _seconds(ts: pa.Array) -> np.ndarray:
    ticks = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)  # nulls arrive as NaN
    return np.asarray(ticks, dtype=np.float64) / _PER_SECOND[ts.type.unit]


def parse_times(text: pa.Array) -> tuple[np.ndarray, int, int | None]:
    """(epoch seconds, NaN where empty; rows without a zone, read as UTC; first row that is
    not a time or None) of a text column."""
    s = _blank_as_null(text)
    zoned = np.asarray(pc.fill_null(pc.match_substring_regex(s, ZONE), False), np.bool_)
    valid = np.asarray(s.is_valid(), np.bool_)
    out = np.full(len(s), np.nan)
    bad: list[int] = []
    for mask, typ in ((zoned, TS), (valid & ~zoned, pa.timestamp("us"))):
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        part = s.take(pa.array(rows))
        convert = _caster(typ)
        try:
            out[rows] = _seconds(convert(part))
        except _ERRORS:
            bad.append(int(rows[_first_refused(part, convert)]))
    return out, int((valid & ~zoned).sum()), (min(bad) if bad else None)


def _caster(typ: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    return lambda a: a.cast(typ)


def parse_numbers(text: pa.Array) -> tuple[np.ndarray, bool, int | None]:
    """(float64 values, NaN where empty; whether every value is a whole number as the
    engine's integer columns need; first row that is not a number or None)."""
    s = _blank_as_null(text)
    try:
        return _as_float(s.cast(pa.int64())), True, None
    except _ERRORS:
        pass
    try:
        return _as_float(s.cast(pa.float64())), False, None
    except _ERRORS:
        return np.empty(0), False, _first_refused(s, _caster(pa.float64()))


def _as_float(a: pa.Array) -> np.ndarray:
    return np.asarray(a.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)


def present_mask(a: pa.Array) -> np.ndarray:
    """Rows with a value: not null, not NaN, not blank text, not an empty list."""
    ok = np.asarray(a.is_valid(), np.bool_)
    t = a.type
    if pa.types.is_string(t):
        ok &= np.asarray(pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(a), ""), False))
    elif pa.types.is_floating(t):
        ok &= ~np.isnan(_as_float(a))
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        ok &= np.asarray(pc.fill_null(pc.list_value_length(a), 0).to_numpy()) > 0
    return ok


class HistoryFile:
    """A Parquet or CSV (by suffix, as `ordersight train` decides) history, opened."""

    def __init__(self, path: str | Path, csv_pass_bytes: int = CSV_PASS_BYTES) -> None:
        self.path = Path(path)
        self.csv_pass_bytes = csv_pass_bytes
        if not self.path.is_file():
            raise InvalidInput(f"--orders {self.path}: no such file", "orders")
        self.is_csv = self.path.suffix.lower() == ".csv"
        try:
            if self.is_csv:
                reader = pacsv.open_csv(self.path)
                self.names = list(reader.schema.names)
                reader.close()
                self.rows = -1
            else:
                self._parquet = pq.ParquetFile(self.path)
                self.names = list(self._parquet.schema_arrow.names)
                self.rows = self._parquet.metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(exc) from exc
        dup = next((n for n in self.names if self.names.count(n) > 1), None)
        if dup is not None:
            raise InvalidInput(f"{self.path}: column '{dup}' appears more than once", dup)
        for name in REQUIRED:
            if name not in self.names:
                raise InvalidInput(f"{self.path}: required column '{name}' is missing", name)

    def _unreadable(self, exc: Exception) -> InvalidInput:
        kind = "CSV" if self.is_csv else "Parquet"
        return InvalidInput(f"--orders {self.path}: not a readable {kind} file: {exc}", "orders")

    def read(self, names: Sequence[str]) -> dict[str, pa.ChunkedArray]:
        """The named columns as stored (Parquet) or as text (CSV, empty cells null)."""
        try:
            if self.is_csv:
                convert = pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    include_columns=list(names),
                    strings_can_be_null=True,
                )
                table = pacsv.read_csv(self.path, convert_options=convert)
            else:
                table = self._parquet.read(columns=list(names))
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(exc) from exc
        if self.rows < 0:
            self.rows = table.num_rows
        if table.num_rows == 0:
            raise InvalidInput(f"--orders {self.path}: no orders (0 rows)", "orders")
        return {n: table.column(n) for n in names}

    def passes(self, names: Sequence[str]) -> Iterator[list[str]]:
        """`names` in groups to read together: one each for Parquet, for CSV as many as fit
        in `csv_pass_bytes` at the file's average bytes per column."""
        per = 1
        if self.is_csv:
            per_column = self.path.stat().st_size / max(len(self.names), 1)
            per = max(1, int(self.csv_pass_bytes // max(per_column, 1.0)))
        for k in range(0, len(names), per):
            yield list(names[k : k + per])


def column(name: str, raw: pa.ChunkedArray, csv: bool, where: str) -> Column:
    """A column described and converted; raises InvalidInput only where the module
    docstring says."""
    expected = _EXPECTED.get(name)
    a = raw.combine_chunks()
    if pa.types.is_dictionary(a.type):
        a = a.dictionary_decode()
    col = Column(
        name,
        str(raw.type),
        str(expected) if expected else None,
        None,
        a.null_count,
        present_mask(a),
    )
    if csv:
        col.file_type = "text"
        _csv_column(col, a, expected, where)
    else:
        _parquet_column(col, a, expected, where)
    _required(col, where)
    return col


def _parquet_column(col: Column, a: pa.Array, expected: pa.DataType | None, where: str) -> None:
    if expected is not None and not _compatible(a.type, expected):
        col.problem = f"the engine reads {expected}, the file has {a.type}"
    t = a.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        col.kind = "time"
        col.numbers = _seconds(a if pa.types.is_timestamp(t) else a.cast(pa.timestamp("us")))
        if pa.types.is_timestamp(t) and t.tz is None:
            col.note = "times without a zone, read as UTC (as the engine does)"
        if col.problem is None and expected is not None:
            try:
                a.cast(pa.timestamp(t.unit, tz="UTC") if t.tz is None else t).cast(expected)
            except _ERRORS:  # nanoseconds that microseconds cannot hold
                col.problem = f"the engine reads {expected} and refuses finer times"
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        col.kind, col.numbers = "number", _as_float(a)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        s = _strings(a)
        if expected is not None and pa.types.is_timestamp(expected):
            _text_times(col, s, where)
        elif expected is not None and pa.types.is_integer(expected):
            _text_numbers(col, s, where)
        else:
            col.kind, col.text = "text", s
    elif pa.types.is_null(t):
        col.kind, col.numbers = "empty", np.full(len(a), np.nan)
    elif col.name == "items" and col.problem is None:
        fields = {f.name for f in t.value_type}
        missing = [f.column for f in ITEM_FIELDS if f.column not in fields]
        if missing:
            col.problem = f"the order lines lack the field '{missing[0]}'"
        else:
            col.kind, col.items = "items", a


def _csv_column(col: Column, a: pa.Array, expected: pa.DataType | None, where: str) -> None:
    """A CSV column: text, parsed as the trainer's CSV reader parses the schema's types."""
    if a.null_count == len(a):
        col.kind, col.numbers = "empty", np.full(len(a), np.nan)
    elif expected is None:
        _infer(col, a)
    elif pa.types.is_timestamp(expected):
        _text_times(col, a, where)
        if col.kind == "time" and not col.note:
            col.file_type = "text: times"
    elif pa.types.is_integer(expected):
        _text_numbers(col, a, where)
    elif pa.types.is_boolean(expected):
        s = _blank_as_null(a)
        try:
            col.kind, col.numbers = "number", _as_float(s.cast(pa.bool_()))
            col.file_type = "text: true/false"
        except _ERRORS:
            bad = _first_refused(s, _caster(pa.bool_()))
            col.problem = f"{_row(bad)} is not true or false: {a[bad].as_py()!r}"
            col.kind, col.text = "text", a
    else:
        col.kind, col.text = "text", a


def _infer(col: Column, a: pa.Array) -> None:
    """A CSV column the engine does not read: numbers, times or text, whichever fits all."""
    numbers, whole, bad = parse_numbers(a)
    if bad is None:
        col.kind, col.numbers = "number", numbers
        col.file_type = "text: " + ("integers" if whole else "numbers")
        return
    times, naive, bad = parse_times(a)
    if bad is None and naive == 0:
        col.kind, col.numbers, col.file_type = "time", times, "text: times"
        return
    col.kind, col.text = "text", a


def _text_times(col: Column, a: pa.Array, where: str) -> None:
    """A time column stored as text: parsed, or refused at its first bad row when the audit
    needs it (created_at, label_known_at)."""
    times, naive, bad = parse_times(a)
    if bad is not None:
        msg = f"{_row(bad)} is not a time: {a[bad].as_py()!r}"
        if col.name in (*REQUIRED, LABEL_TIME):
            raise InvalidInput(f"{where}: column '{col.name}' {msg}", col.name)
        col.problem, col.kind, col.text = col.problem or msg, "text", a
        return
    col.kind, col.numbers = "time", times
    if naive:
        col.note = f"{naive:,} time(s) without a zone, read as UTC here"
        col.file_type += ": times, some without a zone"
        col.problem = col.problem or "the trainer reads text times only with a zone (Z, +01:00)"


def _text_numbers(col: Column, a: pa.Array, where: str) -> None:
    """An integer column stored as text: parsed, or refused at its first bad row when the
    audit needs it (amount_minor, is_fraud)."""
    numbers, whole, bad = parse_numbers(a)
    if bad is not None:
        if col.name == LABEL:
            msg = f"{_row(bad)} must be 0, 1 or empty, is {a[bad].as_py()!r}"
        else:
            msg = f"{_row(bad)} is not a number: {a[bad].as_py()!r}"
        if col.name in (*REQUIRED, LABEL):
            raise InvalidInput(f"{where}: column '{col.name}' {msg}", col.name)
        col.problem, col.kind, col.text = col.problem or msg, "text", a
        return
    col.kind, col.numbers = "number", numbers
    if col.file_type == "text":
        col.file_type = "text: " + ("integers" if whole else "numbers")
    if not whole:
        col.problem = col.problem or f"the engine reads whole numbers ({col.expected})"


_NEEDS = {
    "created_at": ("time",),
    LABEL_TIME: ("time", "empty"),
    LABEL: ("number", "empty"),
    "amount_minor": ("number", "empty"),
}


def _required(col: Column, where: str) -> None:
    """created_at a time on every row, amount_minor numbers, the label columns readable."""
    kinds = _NEEDS.get(col.name)
    if kinds is None:
        return
    if col.kind not in kinds:
        what = {
            "time": "a time (a timestamp, or ISO 8601 text such as 2026-01-05T10:00:00Z)",
            "number": "0, 1 or empty" if col.name == LABEL else "a number",
        }[kinds[0]]
        raise InvalidInput(
            f"{where}: column '{col.name}' must be {what}, is {col.file_type}", col.name
        )
    if col.name == "created_at":
        assert col.numbers is not None  # kind "time"
        missing = np.flatnonzero(np.isnan(col.numbers))
        if missing.size:
            raise InvalidInput(
                f"{where}: column 'created_at' {_row(int(missing[0]))} is empty", "created_at"
            )


def labels_of(col: Column, where: str) -> np.ndarray:
    """int8 labels (1, 0, -1 unknown) of the `is_fraud` column; other values are refused."""
    v = col.numbers if col.numbers is not None else np.full(len(col.present), np.nan)
    bad_rows = np.flatnonzero(~np.isnan(v) & (v != 0) & (v != 1))
    if bad_rows.size:
        i = int(bad_rows[0])
        raise InvalidInput(
            f"{where}: column '{LABEL}' {_row(i)} must be 0, 1 or empty, is {v[i]:g}", LABEL
        )
    return np.where(np.isnan(v), -1, v).astype(np.int8)
