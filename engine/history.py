"""Order histories (Parquet): reading, checking, and when each label became known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.encode import epoch_seconds
from engine.errors import InvalidInput
from engine.schema import conform

DAY_S = 86400.0


@dataclass
class History:
    table: pa.Table  # conformed, with label columns
    labels: np.ndarray  # int8: 1 fraud, 0 legitimate, -1 unknown
    known_at: np.ndarray  # float64 epoch seconds; NaN where the label is never known
    t: np.ndarray  # float64 epoch seconds of created_at


def read_history(path: str | Path, label_delay_days: float = 7.0) -> History:
    """Read a Parquet history; a label without `label_known_at` is known after the delay."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", "orders")
    try:
        raw = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{path}: not a readable Parquet file: {exc}", "orders") from exc
    return history_from_table(raw, label_delay_days, where=str(path))


def history_from_table(
    raw: pa.Table, label_delay_days: float = 7.0, where: str = "orders"
) -> History:
    if label_delay_days < 0:
        raise InvalidInput(f"--label-delay must be >= 0, is {label_delay_days}", "label_delay")
    table = conform(raw, with_labels=True, where=where)
    fraud = table.column("is_fraud")
    labels = np.array(fraud.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int8)
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise InvalidInput(
            f"{where}: column 'is_fraud' must be 0, 1 or null; row {int(np.flatnonzero(bad)[0])} "
            f"is {int(labels[bad][0])}",
            "is_fraud",
        )
    t = epoch_seconds(table.column("created_at"))
    kat = table.column("label_known_at")
    known_at = t + label_delay_days * DAY_S
    if kat.null_count < len(kat):
        valid = np.asarray(kat.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
        ks = epoch_seconds(kat.fill_null(0))
        known_at[valid] = ks[valid]
    known_at[labels < 0] = np.nan
    return History(table, labels, known_at, t)
