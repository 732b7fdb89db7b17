"""The outcomes as a table, whichever store or file holds them: what the reports read.

`read_outcomes(source)` takes a store's DSN (`engine.store.open_store`: a SQLite file or
`postgresql://...`) or a Parquet/CSV file with the columns of OUTCOMES, and returns an Arrow
table with exactly those columns. A file's problems are InvalidInput naming the column and
the row.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InvalidInput

KINDS = ("CHARGEBACK", "CONFIRMED_FRAUD", "CONFIRMED_LEGITIMATE", "REVIEW_VERDICT")
"""Outcome kinds. A chargeback and a confirmed fraud are fraud, a confirmed legitimate is
not (KIND_IS_FRAUD); a review verdict is what the reviewer found."""
KIND_IS_FRAUD = {"CHARGEBACK": True, "CONFIRMED_FRAUD": True, "CONFIRMED_LEGITIMATE": False}
MAX_NOTE = 2000  # characters of an outcome's or a verdict's note
MAX_REVIEWER = 200  # characters of a reviewer's name


def check_reviewer_and_note(reviewer: str, note: str, prefix: str = "") -> None:
    """The length rules of a reviewer's name and a note, wherever they come from (an
    outcome, a resolution, the review page): InvalidInput naming `prefix` + the field."""
    if len(reviewer) > MAX_REVIEWER:
        raise InvalidInput(
            f"{prefix}reviewer: at most {MAX_REVIEWER} characters, has {len(reviewer)}",
            prefix + "reviewer",
        )
    if len(note) > MAX_NOTE:
        raise InvalidInput(
            f"{prefix}note: at most {MAX_NOTE} characters, has {len(note)}", prefix + "note"
        )


_TS = pa.timestamp("us", tz="UTC")
OUTCOMES = pa.schema(
    [
        ("order_id", pa.string()),
        ("kind", pa.string()),
        ("is_fraud", pa.bool_()),
        ("known_at", _TS),  # when the outcome became known (order time, like created_at)
        ("reviewer", pa.string()),  # REVIEW_VERDICT only
        ("note", pa.string()),
        ("reported_at", _TS),  # when the engine stored it (wall clock)
    ]
)
REQUIRED = ("order_id", "kind", "is_fraud", "known_at")
FILE_SUFFIXES = (".parquet", ".csv")


def is_file_source(source: str) -> bool:
    return Path(source).suffix.lower() in FILE_SUFFIXES


def read_outcomes(source: str) -> pa.Table:
    """Every outcome in `source` (a store DSN or an outcomes file), as OUTCOMES."""
    if is_file_source(source):
        return _from_file(Path(source))
    from engine.store import open_store

    store = open_store(source, migrate=False)
    try:
        return store.outcomes_table()
    finally:
        store.close()


def _from_file(path: Path) -> pa.Table:
    if not path.is_file():
        raise InvalidInput(f"--outcomes: {path} is not a file", "--outcomes")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        from pyarrow import csv

        table = csv.read_csv(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}", missing[0])
    cols = []
    for field in OUTCOMES:
        if field.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        try:
            if pa.types.is_timestamp(field.type) and pa.types.is_timestamp(col.type):
                # to microseconds, truncating (pandas writes nanoseconds)
                utc = col if col.type.tz else pc.assume_timezone(col, "UTC")
                col = utc.cast(_TS, safe=False)
            elif pa.types.is_timestamp(field.type):
                col = pc.assume_timezone(
                    pc.strptime(col.cast(pa.string()), "%Y-%m-%dT%H:%M:%S", "us"), "UTC"
                )
            else:
                col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InvalidInput(f"{path}: column {field.name}: {exc}", field.name) from exc
        cols.append(col)
    out = pa.Table.from_arrays(cols, schema=OUTCOMES)
    for name in REQUIRED:
        nulls = pc.is_null(out.column(name))
        if pc.any(nulls).as_py():
            row = pc.index(nulls, True).as_py()
            raise InvalidInput(f"{path}: column {name}, row {row + 1}: empty", name)
    bad = pc.invert(pc.is_in(out.column("kind"), pa.array(KINDS)))
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise InvalidInput(
            f"{path}: column kind, row {row + 1}: {out.column('kind')[row].as_py()!r} is not "
            f"one of {', '.join(KINDS)}",
            "kind",
        )
    return out
