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
averaged, and a bucket with no point is missing: bridged by linear interpolation in the
output, marked `filled`, neither scored nor learnt from, never an alert's onset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.errors import InvalidInput
from engine.monitoring import anomaly_kernels as k
from engine.monitoring import noise_models as nm
from engine.monitoring.anomaly import MIN_POINTS


def _finite(ts: np.ndarray, v: np.ndarray) -> None:
    for arr, field in ((ts, "timestamp"), (v, "value")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise InvalidInput(f"{bad.size} non-finite value(s), first at row {bad[0]}", field)


ALPHA = 1e-4
"""False-alarm rate per point of `detect_series`' alerts on data without anomalies: an
alert opens when `anomaly_score` reaches `1 - ALPHA`."""
REBASE = 12
"""Buckets an alert lasts before its level is taken as the new normal (a level shift)."""
KINDS = ("auto", "count", "gauge")
GAUGE_OFFSET = 1e6
"""Where a gauge's median sits, in its noise sds (`offline_params`)."""


def _is_count(v: np.ndarray) -> bool:
    return bool(((v >= 0) & (v == np.round(v))).all())


def _robust_sd(y: np.ndarray) -> float:
    """Noise sd from successive differences (MAD), blind to level shifts and slow trends."""
    d = np.diff(y)
    return float(np.median(np.abs(d - np.median(d)))) / 0.6745 / np.sqrt(2.0) if d.size else 0.0


def _local_level(y: np.ndarray, period: int) -> np.ndarray:
    """A centred rolling median over one period (the ends held): the level a cycle is
    measured against, so that a level shift or a trend does not read as a cycle."""
    w = min(period | 1, (y.size - 1) | 1 if y.size > 2 else 1)
    if w < 3:
        return np.full(y.size, np.median(y))
    med = np.median(np.lib.stride_tricks.sliding_window_view(y, w), axis=1)
    return np.concatenate([np.full(w // 2, med[0]), med, np.full(w // 2, med[-1])])


def _cycle_supported(y: np.ndarray, slot: np.ndarray, sd: float, period: int) -> bool:
    """Whether the medians of `y` (less its local level) by `slot` spread more than noise
    makes them (four times the variance a median of normal noise has, pi/2 sd^2 / n) and by
    at least half the noise sd: a smaller cycle costs the baseline more in estimation noise
    than it explains."""
    slots = np.unique(slot)
    if slots.size < 2:
        return False
    y = y - _local_level(y, period)
    med = np.array([np.median(y[slot == i]) for i in slots])
    n = np.array([np.count_nonzero(slot == i) for i in slots])
    null = np.pi / 2 * sd**2 * np.mean(1.0 / n)
    spread = float(np.var(med, ddof=1))
    return bool(spread > 4 * null and np.sqrt(spread) >= 0.5 * sd)


def offline_params(
    ts: np.ndarray,
    v: np.ndarray,
    kind: str = "auto",
    alpha: float = ALPHA,
    observed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Values in the kernel's terms, its parameters and daily knots, for a regular series.
    The noise model, scale and cycles are read from the `observed` points only (all when
    None): a bridged gap is no evidence of a level, a spread or a cycle.

    Noise: non-negative integers are counts (negative binomial), unless `kind` is gauge;
    anything else is a gauge (Student t, `anomaly_kernels`). A count's baseline is
    multiplicative (traffic scales its cycles). A gauge is measured in its noise sds (MAD of
    successive differences) and put `GAUGE_OFFSET` of them above zero, where the kernel's
    multiplicative level and profiles act as additive ones: a level shift of a CPU % or a
    temperature moves the whole daily curve, not its amplitude, and values around or below
    zero need no special case. Its scale floor is then 1% of its noise sd.
    Seasonality only where the data supports it (`_cycle_supported`, on values on a
    variance-stabilising scale: 2 sqrt(x + 3/8) for counts): a daily profile when the
    interval is at most 6 h, the series spans at least 3 days and its time-of-day medians
    differ; weekly factors when the interval is at most a day, it spans two weeks and its
    days' means differ by weekday. The alert threshold is the CUSUM level of null tail `alpha`.
    """
    interval = float(np.median(np.diff(ts)))
    span = ts[-1] - ts[0] + interval
    seen = np.ones(v.shape, bool) if observed is None else np.asarray(observed) > 0
    if not seen.any():
        seen = np.ones(v.shape, bool)
    vs = v[seen]
    counts = kind != "gauge" and _is_count(vs)
    if counts:
        x = v
    else:  # in noise sds, far above zero: the kernel's multiplicative terms become additive
        unit = _robust_sd(vs) or float(np.std(vs)) or 1.0
        x = (v - np.median(vs)) / unit
        x += max(GAUGE_OFFSET, 10.0 * float(np.abs(x[seen]).max()))
    y = (2.0 * np.sqrt(v + 0.375) if counts else x)[seen]
    ts = ts[seen]
    sd = _robust_sd(y) or 1e-9
    per_day = k.DAY / interval
    knots = min(48, max(1, round(per_day)))
    tod = np.floor((ts % k.DAY) / (k.DAY / knots)).astype(np.int64)
    daily = (
        interval <= k.DAY / 4 and span >= 3 * k.DAY and _cycle_supported(y, tod, sd, round(per_day))
    )
    weekly = False
    if interval <= 1.1 * k.DAY and span >= 14 * k.DAY:
        day = np.floor(ts / k.DAY).astype(np.int64)
        days, inv = np.unique(day, return_inverse=True)
        means = np.bincount(inv, weights=y) / np.bincount(inv)
        weekly = _cycle_supported(means, (days + 3) % 7, _robust_sd(means) or 1e-9, 7)
    noise = k.NOISE_COUNT if counts else k.NOISE_GAUGE
    P, knots = k.params(per_day, daily=daily, weekly=weekly, counts=counts, noise=noise)
    P[k.P_REBASE], P[k.P_RELEARN] = REBASE, np.inf
    P[k.P_MEM_SCALE] = max(P[k.P_MEM_SCALE], 1000.0)
    P[k.P_H] = nm.threshold_for(alpha, P[k.P_K], P[k.P_CAP])
    return x.reshape(-1, 1), P, knots


def detect_series(
    timestamps: np.ndarray,
    values: np.ndarray,
    kind: str = "auto",
    observed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offline detection over one regular series of any interval and scale, with the live
    monitor's kernel; returns (anomaly_score, in_alert 0/1) per point.

    `anomaly_score` is a calibrated tail probability: `1 - P(a CUSUM at least this large)`
    at one point of data without anomalies, under the noise model fitted to the series
    (`offline_params`), in both directions. So on such data a share `a` of points scores
    above `1 - a`, whatever the series' kind, scale or seasonality; an alert opens at
    `1 - ALPHA`. It is 0 before the warm-up ends and on unobserved points (`observed` False:
    a gauge's gaps), which are neither scored nor learnt from. `kind` is auto, count or
    gauge (`offline_params`). An alert that lasts `REBASE` buckets ends and re-baselines.

    Steps may vary by 10% (e.g. months). Timestamps are epoch seconds of wall-clock time:
    the daily and weekly cycles are read from them as UTC, so pass local time as if it were
    UTC (`detect_csv` does).
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
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, is {kind!r}", "kind")
    seen = np.ones(n) if observed is None else np.asarray(observed, np.float64).reshape(n)
    x, P, knots = offline_params(ts, v, kind, observed=observed)
    c0, c1, f, dow = k.time_features(ts, knots, 0.0)
    out = np.empty((n, 1, k.N_OUT))
    rows, allowed = np.zeros(1, np.int64), np.array([k.DROP | k.SPIKE], np.int8)
    state = k.new_state(1, knots, P)
    e = np.ascontiguousarray((seen > 0).astype(np.float64).reshape(n, 1))
    k.run_block(rows, x, e, ts, c0, c1, f, dow, P, allowed, *state, out)
    warm = (out[:, 0, k.O_WARM] > 0) & (seen > 0)
    score = nm.calibrated_score(out[:, 0, k.O_STAT], P[k.P_K], P[k.P_CAP] * P[k.P_H])
    return np.where(warm, score, 0.0), (out[:, 0, k.O_EP_DIR] != 0).astype(np.int8)


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
        kind = "count" if _is_count(v) else "gauge"
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
        seen = ~grid.filled if grid.kind == "gauge" else None  # a count's empty bucket is 0
        score, state = detect_series(grid.t, grid.value, grid.kind, seen)
    except InvalidInput as exc:
        name = timestamp_col if exc.field == "timestamp" else value_col
        raise InvalidInput(f"column '{name}': {exc}", name) from exc
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
