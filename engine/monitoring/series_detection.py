"""Offline anomaly detection over one series of any interval and scale, with the live
monitor's kernel: `detect_series` chooses the seasonality the history can support, and
`detect_csv` is its file front end (`ordersight detect`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k
from engine.monitoring.anomaly import MIN_POINTS


def detect_series(timestamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offline: any regular interval, any scale, no tuning: returns (anomaly_score in [0,1],
    alert 0/1) per point, using the SAME kernel as StreamMonitor.

    Steps may vary by 10% (e.g. months). The seasonality and noise model follow from the data
    (`engine.monitoring.anomaly_kernels.offline_params`). Points before the warm-up ends score 0.
    Timestamps are epoch seconds of wall-clock time: the daily and weekly cycles are read
    from them as UTC, so pass local time as if it were UTC (`detect_csv` does).
    """
    # Copies: writable C arrays, the one layout the kernel is compiled (and cached) for.
    ts = np.array(timestamps, dtype=np.float64)
    v = np.array(values, dtype=np.float64)
    if ts.ndim != 1 or v.shape != ts.shape:
        raise InvalidInput(f"need two 1-D arrays of one length, got {ts.shape}, {v.shape}", "value")
    n = ts.size
    if n < MIN_POINTS:
        raise InvalidInput(f"series too short: need >= {MIN_POINTS} points, got {n}", "timestamp")
    for arr, field in ((ts, "timestamp"), (v, "value")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise InvalidInput(f"{bad.size} non-finite value(s), first at row {bad[0]}", field)
    step = np.diff(ts)
    if (step <= 0).any():
        i = int(np.argmax(step <= 0)) + 1
        raise InvalidInput(
            f"timestamps must increase; row {i} is not after row {i - 1}", "timestamp"
        )
    interval = float(np.median(step))
    off = np.flatnonzero(np.abs(step - interval) > 0.1 * interval)
    if off.size:
        i = int(off[0]) + 1
        raise InvalidInput(
            f"irregular series: expected a step of {interval:g} s (+-10%), row {i} is "
            f"{step[i - 1]:g} s after row {i - 1}",
            "timestamp",
        )
    x, P, knots = k.offline_params(ts, v)
    c0, c1, f, dow = k.time_features(ts, knots, 0.0)
    out = np.empty((n, 1, k.N_OUT))
    rows, allowed = np.zeros(1, np.int64), np.array([k.DROP | k.SPIKE], np.int8)
    state = k.new_state(1, knots, P)
    k.run_block(rows, x, np.ones((n, 1)), ts, c0, c1, f, dow, P, allowed, *state, out)
    return out[:, 0, k.O_SCORE].copy(), (out[:, 0, k.O_EP_DIR] != 0).astype(np.int8)


def _epoch_seconds(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """Seconds from numbers, timestamps or dates (wall-clock time of tz-aware ones)."""
    typ = col.type
    try:
        if pa.types.is_integer(typ) or pa.types.is_floating(typ):
            return col.to_numpy().astype(np.float64)
        if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_date(typ):
            col = col.cast(pa.timestamp("us"))
        elif not pa.types.is_timestamp(typ):
            raise InvalidInput(f"column '{name}' must hold timestamps or numbers, is {typ}", name)
        if col.type.tz is not None:
            col = pc.local_timestamp(col)
        us = col.cast(pa.timestamp("us")).cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"column '{name}' has values that are not timestamps: {exc}", name
        ) from exc
    return us.to_numpy().astype(np.float64) / 1e6


def detect_csv(
    path: str, out: str, timestamp_col: str = "timestamp", value_col: str = "value"
) -> int:
    """Reads CSV (pyarrow.csv), writes CSV with columns timestamp,value,anomaly_score,alert;
    raises engine.errors.InvalidInput naming the column on a missing column / unparseable
    values / irregular or too-short series; returns rows written."""
    try:
        table = pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"cannot read CSV {path}: {exc}", "csv") from exc
    for name in (timestamp_col, value_col):
        if name not in table.column_names:
            raise InvalidInput(
                f"column '{name}' not found in {path}; columns are {table.column_names}", name
            )
    if table.num_rows == 0:
        raise InvalidInput(f"{path} has a header and no rows: nothing to score", "csv")
    for name in (timestamp_col, value_col):
        if table.column(name).null_count:
            nulls = table.column(name).null_count
            raise InvalidInput(f"column '{name}' has {nulls} empty value(s)", name)
    ts_col = table.column(timestamp_col)
    ts = _epoch_seconds(ts_col, timestamp_col)
    try:
        values = table.column(value_col).cast(pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"column '{value_col}' has values that are not numbers: {exc}", value_col
        ) from exc
    try:
        score, alert = detect_series(ts, values)
    except InvalidInput as exc:
        name = timestamp_col if exc.field == "timestamp" else value_col
        raise InvalidInput(f"column '{name}': {exc}", name) from exc
    result = pa.table(
        {"timestamp": ts_col, "value": values, "anomaly_score": score, "alert": alert}
    )
    pacsv.write_csv(result, out)
    return table.num_rows
