"""Order histories (Parquet or CSV files, or tables): read, validated by the order rules
like any other entry point, with when each label became known.

A bad row is reported with its row number and the rule it breaks. CSV files hold the flat
columns only (no `items`); Parquet holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.codec.arrow_orders import conform, to_columns
from engine.errors import InvalidInput
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderRules, default_rules
from engine.orders.schema import HISTORY_SCHEMA

DAY_S = 86400.0


@dataclass
class History:
    table: pa.Table  # conformed, with label columns
    arrays: OrderArrays  # the orders as the feature kernels read them
    ids: list[str]
    labels: np.ndarray  # int8: 1 fraud, 0 legitimate, -1 unknown
    known_at: np.ndarray  # float64 epoch seconds; NaN where the label is never known
    t: np.ndarray  # float64 epoch seconds of created_at


def read_table(path: str | Path) -> pa.Table:
    """A Parquet or CSV (by suffix) history file as it is. The readers build the arrays
    themselves, so Arrow's structural checks suffice (an IPC stream, whose buffers are taken
    as sent, gets the full validation); UTF-8 and values are the order rules' to check."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", "orders")
    try:
        if path.suffix.lower() == ".csv":
            types = {f.name: f.type for f in HISTORY_SCHEMA if f.name != "items"}
            raw = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            raw = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        raise InvalidInput(f"{path}: not a readable {kind} file: {exc}", "orders") from exc
    try:
        raw.validate()
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"{path}: not valid Arrow data: {exc}", "orders") from exc
    return raw


def read_history(
    path: str | Path, label_delay_days: float = 7.0, rules: OrderRules | None = None
) -> History:
    """Read a history; a label without `label_known_at` is known after the delay."""
    return history_from_table(read_table(path), label_delay_days, str(path), rules)


def history_from_table(
    raw: pa.Table,
    label_delay_days: float = 7.0,
    where: str = "orders",
    rules: OrderRules | None = None,
) -> History:
    if label_delay_days < 0:
        raise InvalidInput(f"--label-delay must be >= 0, is {label_delay_days}", "label_delay")
    table = conform(raw, with_labels=True, where=where)
    rules = rules or default_rules()
    batch = rules.check(to_columns(table), latest=np.inf)
    batch.raise_first(lambda i: batch.refusal_in(i, where))
    fraud = table.column("is_fraud")
    labels = np.array(fraud.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int8)
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise InvalidInput(
            f"{where}: column 'is_fraud' row {int(np.flatnonzero(bad)[0])}: must be 0, 1 or "
            f"null, is {int(labels[bad][0])}",
            "is_fraud",
        )
    t = batch.arrays.t
    kat = table.column("label_known_at")
    known_at = t + label_delay_days * DAY_S
    if kat.null_count < len(kat):
        valid = np.asarray(kat.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
        ks = np.asarray(kat.fill_null(0).cast(pa.int64()).to_numpy(), np.float64) / 1e6
        known_at[valid] = ks[valid]
    known_at[labels < 0] = np.nan
    return History(table, batch.arrays, batch.ids, labels, known_at, t)
