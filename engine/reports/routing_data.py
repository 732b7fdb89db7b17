"""What `ordersight report routing` reads: the routed cases (table `routing_cases`,
`engine/store/migrations/0002.routing.sql`) from a store or from a Parquet/CSV file with the
same columns, checked once here and returned as one typed pandas frame.

A problem is InvalidInput naming the column and, for a value, the row and its case id. Rows
are counted from 1: a file's first data row (the CSV header is not a row, as in
`engine.routing.cases`), or the store's rows in (created_at, case_id) order, the order this
module reads them in.

Rules, each from the table's contract:
- case_id and customer_id are not empty, and a case id appears once;
- status is queued, assigned or completed; an assigned or completed case names its agent
  (agent_id) and has agent_experience, a whole number >= 0 (a queued case's is not read);
- customer_tier is new, standard, key or empty (unknown); priority is low, normal, high or
  urgent; customer_orders is a whole number >= -1 (-1 unknown); routes a whole number >= 0;
- amount and created_at are numbers, sla_s a number > 0; a completed case has completed_at
  no earlier than created_at (times are epoch seconds; a file's timestamp column is taken
  as UTC when it has no zone).

`--where COL=VALUE` keeps the cases whose COL is VALUE (as text) before any rule is
checked, so one file can hold the same cases routed by several routers (a simulation's
`router` column); rows keep their numbers in the source.

The whole table is read at once (the report needs every case per segment); from a store,
only the columns the report uses are selected, so the JSON columns (features, reasons) are
not loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidInput
from engine.routing.order_features import TIERS
from engine.routing.team import PRIORITIES
from engine.store.routing import ASSIGNED, COMPLETED, QUEUED

if TYPE_CHECKING:
    import pandas as pd

TABLE = "routing_cases"
STATUSES = (QUEUED, ASSIGNED, COMPLETED)
UNKNOWN = "unknown"
COLUMNS = (
    "case_id", "customer_id", "customer_tier", "customer_orders", "language", "amount",
    "currency", "category", "priority", "status", "agent_id", "agent_experience", "sla_s",
    "routes", "created_at", "completed_at",
)  # fmt: skip
"""The columns the report reads (of the table's; the others are not needed)."""


def read_routed_cases(
    store: str | None, cases: str | None, extra: Sequence[str], where: Sequence[str] = ()
) -> pd.DataFrame:
    """The routed cases of `store` (a DSN) or `cases` (a file), exactly one of them, those
    matching every `where` (COL=VALUE), checked (the module's rules), with the `extra`
    columns the source has. Columns added:
    `has_agent` (assigned or completed) and `resolution_s` (completed_at - created_at of a
    completed case, else NaN); customer_tier '' becomes UNKNOWN, a queued case's
    agent_experience NaN."""
    if (store is None) == (cases is None):
        raise InvalidInput("give exactly one of --store DSN and --cases FILE", "--store")
    filters = [_filter(w) for w in where]
    if store is not None:
        frame, name = _from_store(store, [*extra, *(c for c, _ in filters)]), f"--store {store}"
    else:
        frame, name = _from_file(str(cases)), f"--cases {cases}"
    for col, value in filters:
        if col not in frame.columns:
            raise InvalidInput(f"--where: {name} has no column {col!r}", "--where")
        frame = frame[(_text(frame[col]) == value).to_numpy()]
    if frame.empty and filters:
        raise InvalidInput(f"--where: no case of {name} matches {', '.join(where)}", "--where")
    return _checked(frame, name, "--store" if store is not None else "--cases")


def _filter(text: str) -> tuple[str, str]:
    col, eq, value = text.partition("=")
    if not eq or not col.strip():
        raise InvalidInput(f"--where: expected COL=VALUE, is {text!r}", "--where")
    return col.strip(), value.strip()


def _from_store(dsn: str, extra: Sequence[str]) -> pd.DataFrame:
    import sqlite3

    import pandas as pd

    from engine.store import is_postgres, open_store

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    if is_postgres(dsn):
        import psycopg

        errors += (psycopg.Error,)
    opening: tuple[type[Exception], ...] = (ValueError, *errors)
    try:
        store = open_store(dsn, migrate=False)
    except opening as exc:
        raise InvalidInput(f"--store: {exc}", "--store") from exc
    try:
        cur = store.conn.cursor()
        cur.execute(f"SELECT * FROM {TABLE} WHERE 1 = 0")
        present = [d[0] for d in cur.description]
        wanted = [c for c in (*COLUMNS, *extra) if c in present]
        _require(present, f"--store {dsn}: table {TABLE}")
        names = list(dict.fromkeys(wanted))  # only names the table has: safe to quote
        cols = ", ".join(f'"{c}"' for c in names)
        cur.execute(f"SELECT {cols} FROM {TABLE} ORDER BY created_at, case_id")
        rows = cur.fetchall()
    except errors as exc:
        raise InvalidInput(f"--store {dsn}: cannot read table {TABLE} ({exc})", "--store") from exc
    finally:
        store.close()
    return pd.DataFrame.from_records(rows, columns=names)


def _from_file(path: str) -> pd.DataFrame:
    from engine.routing.cases import read_cases

    table = read_cases(path, "--cases")
    _require(table.column_names, f"--cases {path}")
    return table.to_pandas()


def _require(names: list[str], where: str) -> None:
    """InvalidInput naming the first of COLUMNS that `names` lacks."""
    gone = [c for c in COLUMNS if c not in names]
    if gone:
        raise InvalidInput(f"{where}: no column {gone[0]} (missing: {', '.join(gone)})", gone[0])


def _checked(frame: pd.DataFrame, where: str, flag: str) -> pd.DataFrame:
    import pandas as pd

    if frame.empty:
        raise InvalidInput(f"{where}: no routed cases", flag)
    ids = _text(frame["case_id"])
    bad = _Rows(where, ids, frame.index.to_numpy() + 1)
    frame = frame.copy()
    for col in ("case_id", "customer_id", "status"):
        frame[col] = _text(frame[col])
        bad.first(col, frame[col] == "", frame[col], "empty")
    bad.first("case_id", ids.duplicated().to_numpy(), ids, "appears twice")
    bad.first("status", ~frame["status"].isin(STATUSES), frame["status"],
              f"is not one of {', '.join(STATUSES)}")  # fmt: skip
    tier = _text(frame["customer_tier"])
    bad.first("customer_tier", ~tier.isin((*TIERS, "")), tier,
              f"is not one of {', '.join(TIERS)} or empty")  # fmt: skip
    frame["customer_tier"] = tier.replace("", UNKNOWN)
    frame["priority"] = _text(frame["priority"])
    bad.first("priority", ~frame["priority"].isin(PRIORITIES), frame["priority"],
              f"is not one of {', '.join(PRIORITIES)}")  # fmt: skip
    for col in ("language", "currency", "category"):
        frame[col] = _text(frame[col]).replace("", UNKNOWN)
    every = np.ones(len(frame), bool)
    frame["customer_orders"] = bad.number(frame, "customer_orders", every, low=-1, whole=True)
    frame["routes"] = bad.number(frame, "routes", every, low=0, whole=True)
    frame["amount"] = bad.number(frame, "amount", every)
    frame["sla_s"] = bad.number(frame, "sla_s", every, low=0, strict=True)
    frame["created_at"] = bad.number(frame, "created_at", every)
    has_agent = frame["status"].isin((ASSIGNED, COMPLETED)).to_numpy()
    agent = _text(frame["agent_id"])
    bad.first("agent_id", has_agent & (agent == "").to_numpy(), agent,
              "empty (an assigned or completed case names its agent)")  # fmt: skip
    frame["agent_id"] = agent
    frame["has_agent"] = has_agent
    frame["agent_experience"] = bad.number(frame, "agent_experience", has_agent, low=0,
                                           whole=True)  # fmt: skip
    done = (frame["status"] == COMPLETED).to_numpy()
    end = bad.number(frame, "completed_at", done)
    resolution = end - frame["created_at"].to_numpy()
    bad.first("completed_at", done & (resolution < 0), pd.Series(end),
              "is before created_at")  # fmt: skip
    frame["completed_at"] = end
    frame["resolution_s"] = resolution
    return frame.reset_index(drop=True)


class _Rows:
    """Raises InvalidInput for the first offending row of a column, naming its case id."""

    def __init__(self, where: str, ids: pd.Series, rows: np.ndarray) -> None:
        self.where, self.ids, self.rows = where, ids.to_numpy(), rows

    def first(self, col: str, mask: Any, values: pd.Series, rule: str) -> None:
        mask = np.asarray(mask, bool)
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            shown = "" if rule == "empty" else f"{values.iloc[i]!r} "
            at = f"row {self.rows[i]} (case {self.ids[i]!r})"
            raise InvalidInput(f"{self.where}: column {col}, {at}: {shown}{rule}", col)

    def number(
        self, frame: pd.DataFrame, col: str, rows: np.ndarray, low: float | None = None,
        whole: bool = False, strict: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """The column as float64 (NaN outside `rows`); in `rows`, an empty value, text that
        is no number, a fraction when `whole`, or a value below `low` (at `low` too when
        `strict`) is an error."""
        raw = _seconds(frame[col])
        value = _numeric(raw)
        self.first(col, rows & raw.isna().to_numpy(), raw, "empty")
        self.first(col, rows & ~np.isfinite(value), raw, "is not a number")
        if whole:
            self.first(col, rows & (value != np.round(value)), raw, "is not a whole number")
        if low is not None:
            under = value <= low if strict else value < low
            rule = f"must be {'>' if strict else '>='} {low:g}"
            self.first(col, rows & under, raw, rule)
        return np.where(rows, value, np.nan)


def _numeric(raw: pd.Series) -> np.ndarray:
    import pandas as pd

    if raw.dtype == bool:  # True is no count of seconds or orders
        return np.full(len(raw), np.nan)
    text = raw.map(lambda v: v.strip() if isinstance(v, str) else v) if raw.dtype == object else raw
    return pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)


def _seconds(values: pd.Series) -> pd.Series:
    """A timestamp column as epoch seconds (UTC when it has no zone); others unchanged."""
    import pandas as pd

    if not pd.api.types.is_datetime64_any_dtype(values):
        return values
    utc = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    return (utc - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def _text(values: pd.Series) -> pd.Series:
    """Text with nulls as '' and surrounding blanks removed."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def source_name(store: str | None, cases: str | None) -> str:
    return f"store `{store}`" if store is not None else f"file `{Path(str(cases))}`"
