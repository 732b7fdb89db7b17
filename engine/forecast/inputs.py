"""Demand, covariate and static files (CSV or Parquet) to a `DemandPanel`: every rule once.

Rules, each an `InvalidInput` naming the column and the (1-based, data) row:
- demand has `series_id`, `date`, `value`; `value` is a number; a (series_id, date) appears
  once; dates lie on the `--freq` grid (D: whole days; W: one weekday throughout; H: whole
  hours). A period missing inside a series is zero demand (`missing="zero"`) or unknown
  (`missing="nan"`); an empty `value` counts as missing.
- covariates have `date` and optionally `series_id` (without it a row holds for every series),
  then numeric or categorical columns (a column with any non-number is categorical). Each
  column must cover every series from its first period to `horizon` periods after its last:
  a gap inside is forward-filled, named in `DemandPanel.notes` and in a warning; a value
  missing before the first or after the last one given is an error naming the series and date.
- static has `series_id` then attributes; a series there without demand is a new series,
  forecast by cold start from its attributes.
- an order history (`demand_from_orders`) gives demand per channel, category or sku.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import InvalidInput
from engine.forecast.panel import FREQ_STEP, DemandPanel

MISSING = ("zero", "nan")
LEVELS = ("channel", "category", "sku")
MEASURES = ("units", "value")


def read_frame(path: str | Path, what: str) -> pa.Table:
    """A CSV (every column read as text, converted by the rules below) or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file", what)
    try:
        if path.suffix.lower() == ".csv":
            with path.open() as f:
                header = f.readline().strip().split(",")
            types = {name.strip('"'): pa.string() for name in header}
            opts = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
            return pacsv.read_csv(path, convert_options=opts)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not a readable CSV or Parquet file: {exc}", what) from exc


def _require(table: pa.Table, columns: tuple[str, ...], where: str) -> None:
    for c in columns:
        if c not in table.column_names:
            raise InvalidInput(f"{where}: no column '{c}' (has {table.column_names})", c)


def _numbers(col: pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    """float64, NaN for null; a non-number names its row."""
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    if pa.types.is_boolean(col.type):
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        raise InvalidInput(f"{where}: column '{name}' must hold numbers, is {col.type}", name)
    try:
        return np.asarray(
            pc.cast(pc.utf8_trim_whitespace(col), pa.float64()).to_numpy(zero_copy_only=False),
            np.float64,
        )
    except pa.ArrowInvalid as exc:
        row, v = _first_refused(col, pa.float64())
        raise InvalidInput(
            f"{where}: column '{name}', row {row}: {v!r} is not a number", name
        ) from exc


def _first_refused(col: pa.ChunkedArray, *types: pa.DataType) -> tuple[int, object]:
    """(1-based row, value) of the first string that Arrow casts to none of `types`: the
    rule is Arrow's own, so the row named is the one the cast refused."""
    for row, v in enumerate(col.to_pylist(), start=1):
        if v is None:
            continue
        one = pc.utf8_trim_whitespace(pa.array([v], pa.string()))
        for t in types:
            try:
                pc.cast(one, t)
                break
            except pa.ArrowInvalid:
                continue
        else:
            return row, v
    return 0, None  # unreachable when the whole column failed to cast


def _is_numeric(col: pa.ChunkedArray) -> bool:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return True
    if not pa.types.is_string(t) and not pa.types.is_large_string(t):
        return False
    try:
        pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def _strings(col: pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        raise InvalidInput(f"{where}: column '{name}', row {row}: empty", name)
    return np.asarray(col.cast(pa.string()).to_numpy(zero_copy_only=False)).astype(str)


def _dates(col: pa.ChunkedArray, freq: str, where: str) -> np.ndarray:
    """datetime64[s] on the `freq` grid; a value that is not a date names its row."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        trimmed = pc.utf8_trim_whitespace(col)
        try:
            col = pc.cast(trimmed, pa.timestamp("s"))
        except pa.ArrowInvalid:
            try:  # times with a zone ("...Z", "+02:00") are read as UTC
                col = pc.cast(trimmed, pa.timestamp("s", tz="UTC")).cast(pa.timestamp("s"))
            except pa.ArrowInvalid as exc:
                row, v = _first_refused(col, pa.timestamp("s"), pa.timestamp("s", tz="UTC"))
                if not row:  # each value reads, but not all in one form
                    raise InvalidInput(
                        f"{where}: column 'date' mixes times with a zone and without: give "
                        "every date in one form",
                        "date",
                    ) from exc
                raise InvalidInput(
                    f"{where}: column 'date', row {row}: {v!r} is not a date", "date"
                ) from exc
    elif pa.types.is_timestamp(col.type) and col.type.tz is not None:
        col = col.cast(pa.timestamp("s", tz="UTC")).cast(pa.timestamp("s"))
    elif not (pa.types.is_date(col.type) or pa.types.is_timestamp(col.type)):
        raise InvalidInput(f"{where}: column 'date' must hold dates, is {col.type}", "date")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        raise InvalidInput(f"{where}: column 'date', row {row}: empty", "date")
    out = np.asarray(col.cast(pa.timestamp("s")).to_numpy(zero_copy_only=False), "datetime64[s]")
    unit = np.timedelta64(1, "h" if freq == "H" else "D").astype("m8[s]")
    off = (out - np.datetime64(0, "s")) % unit
    if off.any():
        row = int(np.flatnonzero(off)[0]) + 1
        kind = "a whole hour" if freq == "H" else "a whole day"
        raise InvalidInput(
            f"{where}: column 'date', row {row}: {out[row - 1]} is not {kind} (--freq {freq})",
            "date",
        )
    return out


def check_freq(freq: str) -> str:
    if freq not in FREQ_STEP:
        raise InvalidInput(f"--freq must be one of {', '.join(FREQ_STEP)}, is {freq!r}", "freq")
    return freq


def _duplicate(keys: np.ndarray, where: str, columns: dict[str, np.ndarray]) -> None:
    """The first repeated key names both rows and the repeated values."""
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if len(same):
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        what = ", ".join(columns)
        vals = ", ".join(str(v[b]) for v in columns.values())
        raise InvalidInput(
            f"{where}: rows {a + 1} and {b + 1}: duplicate ({what}) = ({vals})", next(iter(columns))
        )


def demand_from_orders(path: str | Path, level: str, measure: str, freq: str) -> pa.Table:
    """An order history (HISTORY_SCHEMA, Parquet or CSV) as `series_id, date, value`: items
    exploded, their quantity (`units`) or quantity * unit_price_minor (`value`, in minor
    units, so one currency only) summed per `level` key and period. A missing key is
    `unknown`."""
    from engine.codec.history import read_table

    if level not in LEVELS:
        raise InvalidInput(f"--level must be one of {', '.join(LEVELS)}, is {level!r}", "level")
    if measure not in MEASURES:
        raise InvalidInput(f"--measure must be one of {', '.join(MEASURES)}", "measure")
    raw = read_table(path)
    _require(raw, ("created_at", "items"), str(path))
    items = raw.column("items").combine_chunks()
    parent = pc.list_parent_indices(items)
    flat = pc.list_flatten(items)
    if measure == "value":
        if "currency" in raw.column_names and len(pc.unique(raw.column("currency"))) > 1:
            raise InvalidInput(
                f"{path}: column 'currency': more than one currency; --measure "
                "value sums minor units, so give one currency's orders",
                "currency",
            )
        v = pc.multiply(flat.field("quantity"), flat.field("unit_price_minor"))
    else:
        v = flat.field("quantity")
    if level == "channel":
        _require(raw, ("channel",), str(path))
        key = pc.take(raw.column("channel"), parent)
    else:
        key = flat.field(level)
    created = pc.take(raw.column("created_at"), parent)
    unit = {"D": "day", "W": "week", "H": "hour"}[check_freq(freq)]
    when = pc.floor_temporal(created, unit=unit, week_starts_monday=True)
    t = pa.table(
        {
            "series_id": pc.fill_null(key, "unknown"),
            "date": when,
            "value": pc.fill_null(v, 0).cast(pa.float64()),
        }
    )
    g = t.group_by(["series_id", "date"]).aggregate([("value", "sum")])
    return g.rename_columns(["series_id", "date", "value"]).sort_by(
        [("series_id", "ascending"), ("date", "ascending")]
    )


def build_panel(
    demand: pa.Table,
    *,
    freq: str = "D",
    missing: str = "zero",
    horizon: int = 0,
    covariates: pa.Table | None = None,
    static: pa.Table | None = None,
    encoding: dict[str, tuple[str, ...]] | None = None,
    covariate_names: tuple[str, ...] | None = None,
    static_names: tuple[str, ...] | None = None,
    where: tuple[str, str, str] = ("demand", "covariates", "static"),
) -> DemandPanel:
    """Validate the tables and lay them on one grid. `encoding`, `covariate_names` and
    `static_names`, when given (a trained model's), fix the categories and the columns a
    model expects; a column it expects that the files lack is an error."""
    check_freq(freq)
    if missing not in MISSING:
        raise InvalidInput(f"--missing must be zero or nan, is {missing!r}", "missing")
    if horizon < 0:
        raise InvalidInput(f"--horizon must be >= 0, is {horizon}", "horizon")
    _require(demand, ("series_id", "date", "value"), where[0])
    sid = _strings(demand.column("series_id"), "series_id", where[0])
    dates = _dates(demand.column("date"), freq, where[0])
    value = _numbers(demand.column("value"), "value", where[0])
    enc = dict(encoding or {})
    learn = encoding is None

    static_ids = np.array([], dtype=str)
    if static is not None:
        _require(static, ("series_id",), where[2])
        static_ids = _strings(static.column("series_id"), "series_id", where[2])
    ids = np.unique(np.concatenate([sid, static_ids]))
    if len(ids) == 0:
        raise InvalidInput(f"{where[0]}: no rows", "value")
    step = FREQ_STEP[freq].astype("m8[s]")
    if len(dates):
        origin = dates.min()
        last_date = dates.max()
    else:
        raise InvalidInput(f"{where[0]}: no rows", "value")
    off = (dates - origin) % step
    if off.any():
        row = int(np.flatnonzero(off)[0]) + 1
        raise InvalidInput(
            f"{where[0]}: column 'date', row {row}: {dates[row - 1]} is not on the "
            f"weekly grid starting {origin} (one weekday throughout)",
            "date",
        )
    t = ((dates - origin) // step).astype(np.int64)
    T = int((last_date - origin) // step) + 1
    srow = np.searchsorted(ids, sid)
    _duplicate(srow * (T + 1) + t, where[0], {"series_id": sid, "date": dates})

    n = len(ids)
    first = np.full(n, T, dtype=np.int64)
    last = np.full(n, T - 1, dtype=np.int64)
    np.minimum.at(first, srow, t)
    last_seen = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_seen, srow, t)
    has = last_seen >= 0
    last[has] = last_seen[has]
    values = np.full((n, T), np.nan)
    cols = np.arange(T)[None, :]
    inside = (cols >= first[:, None]) & (cols <= last[:, None])
    if missing == "zero":
        values[inside] = 0.0
    values[srow, t] = value
    if missing == "zero":
        values[inside & np.isnan(values)] = 0.0

    panel_cov, cov_names, notes = _covariates(
        covariates,
        ids,
        origin,
        step,
        T,
        first,
        last,
        horizon,
        freq,
        enc,
        learn,
        covariate_names,
        where[1],
    )
    st, st_names = _static(static, static_ids, ids, enc, learn, static_names, where[2])
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return DemandPanel(
        freq, origin, ids, values, first, last, panel_cov, cov_names, st, st_names, enc, notes
    )


def _encode(
    col: pa.ChunkedArray, name: str, enc: dict[str, tuple[str, ...]], learn: bool, where: str
) -> np.ndarray:
    """Numbers as they are; text as its code in `enc[name]` (NaN for a category unseen)."""
    if name not in enc and not (learn and not _is_numeric(col)):
        return _numbers(col, name, where)  # a column the model took as numeric must stay so
    text = np.asarray(col.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    if learn and name not in enc:
        enc[name] = tuple(sorted({str(v) for v in text if v is not None}))
    cats = {c: i for i, c in enumerate(enc.get(name, ()))}
    return np.array([cats.get(v, np.nan) if v is not None else np.nan for v in text])


def _covariates(table, ids, origin, step, T, first, last, horizon, freq, enc, learn, expect, where):  # type: ignore[no-untyped-def]
    n = len(ids)
    Tc = T + horizon
    if table is None:
        if expect:
            raise InvalidInput(
                f"the model uses covariates {list(expect)}: give --covariates", expect[0]
            )
        return np.zeros((n, Tc, 0), np.float32), (), []
    _require(table, ("date",), where)
    names = tuple(c for c in table.column_names if c not in ("date", "series_id"))
    if expect is not None:
        for c in expect:
            if c not in names:
                raise InvalidInput(f"{where}: no column '{c}' (the model uses it)", c)
        names = tuple(expect)
    dates = _dates(table.column("date"), freq, where)
    off = (dates - origin) % step
    if off.any():
        r = int(np.flatnonzero(off)[0]) + 1
        raise InvalidInput(
            f"{where}: column 'date', row {r}: {dates[r - 1]} is not on the demand's grid", "date"
        )
    t = ((dates - origin) // step).astype(np.int64)
    keep = (t >= 0) & (t < Tc)
    per_series = "series_id" in table.column_names
    if per_series:
        sid = _strings(table.column("series_id"), "series_id", where)
        r = np.searchsorted(ids, sid)
        known = (r < n) & (ids[np.minimum(r, n - 1)] == sid)
        keep &= known
        keys = np.where(known, r * 2**32 + t + 2**31, -1 - np.arange(len(t)))
        _duplicate(keys, where, {"series_id": sid, "date": dates})
    else:
        r = np.zeros(len(t), dtype=np.int64)
        _duplicate(t, where, {"date": dates})
    rows = n if per_series else 1
    out = np.full((rows, Tc, len(names)), np.nan, np.float32)
    for k, name in enumerate(names):
        out[r[keep], t[keep], k] = _encode(table.column(name), name, enc, learn, where)[keep]
    if not per_series:
        out = np.broadcast_to(out, (n, Tc, len(names)))
    need_lo = np.minimum(first, last + 1)
    need_hi = last + horizon  # inclusive
    cols = np.arange(Tc)[None, :]
    need = (cols >= need_lo[:, None]) & (cols <= need_hi[:, None])
    filled = out.copy()
    notes = []
    for k, name in enumerate(names):
        v = filled[:, :, k]
        have = ~np.isnan(v)
        idx = np.where(have, cols, 0)
        np.maximum.accumulate(idx, axis=1, out=idx)
        ff = np.take_along_axis(v, idx, axis=1)
        ff[~np.maximum.accumulate(have, axis=1)] = np.nan  # before the first value
        ff[~np.maximum.accumulate(have[:, ::-1], axis=1)[:, ::-1]] = np.nan  # after the last
        missing = need & np.isnan(ff)
        if missing.any():
            i, j = (int(a[0]) for a in np.nonzero(missing))
            part = "the horizon" if j > last[i] else "the history"
            sid_txt = f"series {ids[i]}, " if per_series else ""
            raise InvalidInput(
                f"{where}: column '{name}' has no value for {sid_txt}"
                f"{origin + j * step} ({part}: each column must cover every "
                f"series from its first period to {horizon} after its last)",
                name,
            )
        gap_dates = np.flatnonzero((need & ~have).any(axis=0))
        if len(gap_dates):
            notes.append(
                f"{where}: column '{name}': missing on {len(gap_dates)} date(s) from "
                f"{origin + int(gap_dates[0]) * step}, forward-filled"
            )
        filled[:, :, k] = np.where(need, ff, v)
    return np.ascontiguousarray(filled, dtype=np.float32), names, notes


def _static(table, static_ids, ids, enc, learn, expect, where):  # type: ignore[no-untyped-def]
    n = len(ids)
    if table is None:
        names = tuple(expect or ())
        return np.full((n, len(names)), np.nan, np.float32), names
    names = tuple(c for c in table.column_names if c != "series_id")
    if expect is not None:
        names = tuple(expect)  # a column the model does not know is ignored; one lacking is NaN
    _duplicate(np.searchsorted(ids, static_ids), where, {"series_id": static_ids})
    out = np.full((n, len(names)), np.nan, np.float32)
    r = np.searchsorted(ids, static_ids)
    for k, name in enumerate(names):
        if name in table.column_names:
            out[r, k] = _encode(table.column(name), name, enc, learn, where)
    return out, names
