"""Offline anomaly detection over one series of any interval and scale, with the live
monitor's kernel: `detect_series` chooses the seasonality the history can support over a
regular series, `regularize` puts a real one (irregular steps, gaps, duplicate and
out-of-order timestamps) on a regular grid first, and `detect_csv` is their file front end
(`ordersight detect`).

The grid's rules (`regularize`): points are sorted by time and put in buckets of `interval`
seconds (`--interval`; by default the median positive step between points) from the first
point's time, so a regular series keeps its own timestamps. A **count** series (`--kind
count`; what `auto` picks when every value is a non-negative integer) sums the points of a
bucket, so duplicates add up, and a bucket with no point is zero. A **gauge** (`--kind
gauge`, `auto`'s choice otherwise: CPU %, latencies, prices) averages them, so duplicates are
averaged, and a bucket with no point is missing: the model sees it bridged by linear
interpolation, it is marked `filled`, scored 0 and never raises an alert."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k
from engine.monitoring.anomaly import MIN_POINTS


def _finite(ts: np.ndarray, v: np.ndarray) -> None:
    for arr, field in ((ts, "timestamp"), (v, "value")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise InvalidInput(f"{bad.size} non-finite value(s), first at row {bad[0]}", field)


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
    _finite(ts, v)
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


KINDS = ("auto", "count", "gauge")
MAX_BUCKETS = 5_000_000
"""Most buckets a grid may have: a stray timestamp years away must not fill memory."""


@dataclass(frozen=True)
class Grid:
    t: np.ndarray  # start of each bucket, epoch seconds
    value: np.ndarray  # sum (count) or mean (gauge) of its points; gauge gaps bridged
    points: np.ndarray  # raw points in the bucket
    filled: np.ndarray  # no raw point: zero (count) or bridged (gauge)
    kind: str  # "count" or "gauge"
    interval: float


def regularize(
    ts: np.ndarray, values: np.ndarray, kind: str = "auto", interval: float | None = None
) -> Grid:
    """A regular grid of buckets from points at any times (module docstring for the rules);
    InvalidInput naming `timestamp` or `value` when no grid can be made."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, is {kind!r}", "kind")
    ts, v = np.asarray(ts, np.float64), np.asarray(values, np.float64)
    _finite(ts, v)
    order = np.argsort(ts, kind="stable")
    ts, v = ts[order], v[order]
    if interval is None:
        steps = np.diff(ts)
        steps = steps[steps > 0]
        if not steps.size:
            raise InvalidInput("every timestamp is the same: give the interval", "timestamp")
        interval = float(np.median(steps))
    if not interval > 0:
        raise InvalidInput(
            f"interval must be a positive number of seconds, is {interval}", "interval"
        )
    if kind == "auto":
        kind = "count" if ((v >= 0) & (v == np.round(v))).all() else "gauge"
    origin = ts[0]
    b = np.floor((ts - origin) / interval + 1e-9).astype(np.int64)  # a point on a boundary
    n = int(b[-1]) + 1
    if n > MAX_BUCKETS:
        raise InvalidInput(
            f"a grid of {interval:g} s from {ts[0]:.0f} to {ts[-1]:.0f} would have {n:,} "
            f"buckets (at most {MAX_BUCKETS:,}): a stray timestamp, or give a longer interval",
            "timestamp",
        )
    points = np.bincount(b, minlength=n)
    sums = np.bincount(b, weights=v, minlength=n)
    filled = points == 0
    if kind == "count":
        value = sums
    else:
        value = np.divide(sums, points, out=np.zeros(n), where=~filled)
        have = np.flatnonzero(~filled)
        value[filled] = np.interp(np.flatnonzero(filled), have, value[have])
    t = origin + interval * np.arange(n, dtype=np.float64)
    return Grid(t, value, points, filled, kind, interval)


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
    path: str,
    out: str,
    timestamp_col: str = "timestamp",
    value_col: str = "value",
    kind: str = "auto",
    interval: float | None = None,
) -> int:
    """Reads CSV (pyarrow.csv), puts it on a grid (`regularize`) and writes CSV with one row
    per bucket: timestamp (its start), value, points, filled, anomaly_score, alert (1 on the
    first bucket of an incident only) and in_alert (1 while it lasts). Raises
    engine.errors.InvalidInput naming the column on a missing column, unparseable values or
    a too-short series; returns rows written."""
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
        grid = regularize(ts, values, kind, interval)
        score, state = detect_series(grid.t, grid.value)
    except InvalidInput as exc:
        name = timestamp_col if exc.field == "timestamp" else value_col
        raise InvalidInput(f"column '{name}': {exc}", name) from exc
    if grid.kind == "gauge":  # a bridged gap is no observation: no score, no new incident
        score = np.where(grid.filled, 0.0, score)
    in_alert = state.astype(np.int8)
    alert = in_alert & (np.diff(in_alert, prepend=np.int8(0)) > 0).astype(np.int8)
    numeric = pa.types.is_integer(ts_col.type) or pa.types.is_floating(ts_col.type)
    stamps = (
        pa.array(grid.t)
        if numeric
        else pa.array(np.round(grid.t * 1e6).astype(np.int64), pa.timestamp("us"))
    )
    result = pa.table({
        "timestamp": stamps, "value": grid.value, "points": grid.points,
        "filled": grid.filled.astype(np.int8), "anomaly_score": score, "alert": alert,
        "in_alert": in_alert,
    })  # fmt: skip
    pacsv.write_csv(result, out)
    return result.num_rows
