"""Feature rows for the direct multi-horizon models, built by gathering from whole arrays.

A row is (series i, origin t, horizon h): what is known at the end of period t, describing
the target period j = t + h. Everything is in the series' own scale `s` (its mean absolute
demand over the last `windows[1]` periods at the origin; over the long cycle if those are all
zero; the model's prior for its static group if it has no history), so a series selling
0.2 units a day and one selling 500 share one model; `log_scale` tells the trees which is
which. The target is `y[j] / s` (`cumulative=True`: the mean over periods t+1..j, for the
lead-time model).

Row layout (`feature_names`): horizon, log_scale, history_len, since_nonzero, lags of the
last `n_lags` periods, rolling means over three windows, rolling std and share of zeros,
the seasonal lag of j and the mean of four seasonal lags, the long-cycle lag of j and the
mean around it, calendar of j (day of week, hour, month, day or week of year), periods to
the next and since the last holiday (from a covariate named `holiday`), each covariate at j
and, for a numeric one, its change since t, then the static attributes (categorical ones as
integer codes: LightGBM splits on them as numbers, and the ONNX tree ensemble needs nothing
else). Lookups before a series' first period or past its last give NaN, which the trees route
on the learnt missing-value branch: short histories and new series get rows like any other.

Every function here takes arrays for all requested rows at once: building the rows for a
thousand series is a handful of NumPy gathers, not a loop per series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.forecast.panel import LONG_SEASON, SEASON, DemandPanel

WINDOWS = {"D": (7, 28, 91), "W": (4, 13, 52), "H": (24, 168, 672)}
N_LAGS = {"D": 14, "W": 8, "H": 48}
MANTISSA_BITS = 12
PRIOR_SHRINK = 5.0
HOLIDAY_CAP = 30  # periods: farther than this from a holiday reads as "none near"


@dataclass(frozen=True)
class FeatureSpec:
    freq: str
    covariate_names: tuple[str, ...]
    static_names: tuple[str, ...]
    categorical: frozenset[str]

    @classmethod
    def of(cls, panel: DemandPanel) -> FeatureSpec:
        return cls(panel.freq, panel.covariate_names, panel.static_names, frozenset(panel.encoding))

    @property
    def history_periods(self) -> int:
        """Periods of history any feature looks at: what a model keeps to forecast from."""
        m, y = SEASON[self.freq], LONG_SEASON[self.freq]
        return max(y + 2 + m, 4 * m + m, WINDOWS[self.freq][2], y) + 1

    def feature_names(self) -> list[str]:
        f = self.freq
        names = ["horizon", "log_scale", "history_len", "since_nonzero"]
        names += [f"lag_{k}" for k in range(N_LAGS[f])]
        names += [f"mean_{w}" for w in WINDOWS[f]]
        names += [f"std_{WINDOWS[f][1]}", f"zero_share_{WINDOWS[f][1]}"]
        names += ["seasonal_lag", "seasonal_mean4", "long_lag", "long_mean3"]
        names += {"D": ["dow", "month", "doy"], "W": ["woy", "month"], "H": ["hour", "dow"]}[f]
        if "holiday" in self.covariate_names:
            names += ["holiday_next", "holiday_prev"]
        for c in self.covariate_names:
            names.append(f"cov_{c}")
            if c not in self.categorical:
                names.append(f"cov_{c}_change")
        names += [f"static_{c}" for c in self.static_names]
        return names


class PanelStats(NamedTuple):
    """Cumulative sums over time (a leading zero column), so any window is two gathers."""

    csum: np.ndarray  # [n, T+1] sum of known values
    cabs: np.ndarray  # [n, T+1] sum of |values|
    csq: np.ndarray  # [n, T+1] sum of squares
    ccnt: np.ndarray  # [n, T+1] count of known values
    czero: np.ndarray  # [n, T+1] count of zeros
    last_nonzero: np.ndarray  # [n, T] index of the last value > 0 at or before t, -1 none
    holiday_next: np.ndarray  # [n, Tc] periods to the next holiday (cap: HOLIDAY_CAP)
    holiday_prev: np.ndarray  # [n, Tc]


def panel_stats(panel: DemandPanel) -> PanelStats:
    v = panel.values
    known = ~np.isnan(v)
    z = np.where(known, v, 0.0)

    def cum(a: np.ndarray) -> np.ndarray:
        out = np.zeros((a.shape[0], a.shape[1] + 1))
        np.cumsum(a, axis=1, out=out[:, 1:])
        return out

    cols = np.arange(v.shape[1])[None, :]
    last_nz = np.maximum.accumulate(np.where(z > 0, cols, -1), axis=1)
    n, tc = panel.covariates.shape[:2]
    nxt = np.full((n, tc), HOLIDAY_CAP, np.float64)
    prv = np.full((n, tc), HOLIDAY_CAP, np.float64)
    if "holiday" in panel.covariate_names:
        hol = panel.covariates[:, :, panel.covariate_names.index("holiday")] > 0
        idx = np.arange(tc)[None, :]
        prev_at = np.maximum.accumulate(np.where(hol, idx, -(10**9)), axis=1)
        next_at = np.minimum.accumulate(np.where(hol, idx, 10**9)[:, ::-1], axis=1)[:, ::-1]
        prv = np.minimum(idx - prev_at, HOLIDAY_CAP).astype(np.float64)
        nxt = np.minimum(next_at - idx, HOLIDAY_CAP).astype(np.float64)
    return PanelStats(
        cum(z),
        cum(np.abs(z)),
        cum(z * z),
        cum(known.astype(np.float64)),
        cum((known & (v == 0)).astype(np.float64)),
        last_nz,
        nxt,
        prv,
    )


Effects = dict[str, dict[float, float]]


def series_prior(panel: DemandPanel) -> tuple[Effects, float]:
    """A scale for series without history, from their categorical static attributes: a
    main-effects model of log mean demand (the overall mean of logs plus, per attribute, its
    category's mean deviation, shrunk towards 0 by n / (n + PRIOR_SHRINK)). Additive in logs,
    so a new product in a known store type and category gets both effects even when no
    series has that exact combination. Returns (effects per attribute, exp(overall))."""
    known = ~np.isnan(panel.values)
    cnt = known.sum(axis=1)
    mean = np.nansum(np.abs(panel.values), axis=1) / np.maximum(cnt, 1)
    ok = (cnt > 0) & (mean > 0)
    if not ok.any():
        return {}, 1.0
    logm = np.log(mean[ok])
    base = float(logm.mean())
    effects: Effects = {}
    for k, c in enumerate(panel.static_names):
        if c not in panel.encoding:
            continue
        codes = panel.static[ok, k]
        effects[c] = {}
        for code in np.unique(codes[~np.isnan(codes)]):
            dev = logm[codes == code] - base
            effects[c][float(code)] = float(dev.sum() / (len(dev) + PRIOR_SHRINK))
    return effects, float(np.exp(base))


def prior_scales(panel: DemandPanel, effects: Effects, overall: float) -> np.ndarray:
    logp = np.full(panel.n_series, np.log(overall))
    for c, table in effects.items():
        if c in panel.static_names:
            col = panel.static[:, panel.static_names.index(c)]
            logp += np.array([table.get(float(v), 0.0) for v in col])
    return np.exp(logp)


def _at(a: np.ndarray, i: np.ndarray, idx: np.ndarray) -> np.ndarray:
    ok = (idx >= 0) & (idx < a.shape[1])
    return np.where(ok, a[i, np.clip(idx, 0, a.shape[1] - 1)], np.nan)


def _window(c: np.ndarray, i: np.ndarray, t: np.ndarray, w: int) -> np.ndarray:
    hi = np.clip(t + 1, 0, c.shape[1] - 1)
    return np.asarray(c[i, hi] - c[i, np.clip(t + 1 - w, 0, c.shape[1] - 1)])


def scales(
    panel: DemandPanel,
    stats: PanelStats,
    i: np.ndarray,
    t: np.ndarray,
    prior: np.ndarray,
    floor: float,
) -> np.ndarray:
    """The scale s of rows (i, t): see the module docstring."""
    w = WINDOWS[panel.freq][1]
    y = LONG_SEASON[panel.freq]
    with np.errstate(invalid="ignore", divide="ignore"):
        short = _window(stats.cabs, i, t, w) / _window(stats.ccnt, i, t, w)
        long = _window(stats.cabs, i, t, y) / _window(stats.ccnt, i, t, y)
    s = np.where(short > 0, short, np.where(long > 0, long, prior[i]))
    return np.maximum(s, floor)


def build_rows(
    spec: FeatureSpec,
    panel: DemandPanel,
    stats: PanelStats,
    i: np.ndarray,
    t: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """float32 [rows, len(spec.feature_names())] for rows (i, t, h) of scale `scale`."""
    f, v = spec.freq, panel.values
    m, y = SEASON[f], LONG_SEASON[f]
    j = t + h
    cols: list[np.ndarray] = [h.astype(np.float64), np.log(scale)]
    cols.append(np.clip(t - panel.first[i] + 1, 0, y + m).astype(np.float64))
    lnz = _at(stats.last_nonzero.astype(np.float64), i, t)
    cols.append(np.where(lnz >= 0, np.minimum(t - lnz, y), np.nan))
    cols += [_at(v, i, t - k) / scale for k in range(N_LAGS[f])]
    w1, w2, w3 = WINDOWS[f]
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in (w1, w2, w3):
            cols.append(_window(stats.csum, i, t, w) / _window(stats.ccnt, i, t, w) / scale)
        cnt = _window(stats.ccnt, i, t, w2)
        mean = _window(stats.csum, i, t, w2) / cnt
        var = np.maximum(_window(stats.csq, i, t, w2) / cnt - mean * mean, 0.0)
        cols += [np.sqrt(var) / scale, _window(stats.czero, i, t, w2) / cnt]
    back = m * np.ceil(h / m).astype(np.int64)  # the latest same-season period at or before t
    cols.append(_at(v, i, j - back) / scale)
    with np.errstate(invalid="ignore"):
        seas = np.stack([_at(v, i, j - back - m * k) for k in range(4)])
        cols.append(_nanmean(seas) / scale)
        long_ok = j - y <= t
        cols.append(np.where(long_ok, _at(v, i, j - y), np.nan) / scale)
        around = np.stack([_at(v, i, j - y + d) for d in (-1, 0, 1)])
        cols.append(np.where(j - y + 1 <= t, _nanmean(around), np.nan) / scale)
    cols += _calendar(panel, j)
    if "holiday" in spec.covariate_names:
        cols += [_at(stats.holiday_next, i, j), _at(stats.holiday_prev, i, j)]
    for k, c in enumerate(spec.covariate_names):
        cov = panel.covariates[:, :, k]
        at_j = _at(cov, i, j)
        cols.append(at_j)
        if c not in spec.categorical:
            cols.append(at_j - _at(cov, i, t))
    cols += [panel.static[i, k].astype(np.float64) for k in range(len(spec.static_names))]
    return coarsen(np.stack(cols, axis=1))


def coarsen(x: np.ndarray) -> np.ndarray:
    """float32 with the mantissa rounded to MANTISSA_BITS. LightGBM splits at double midpoints
    between training values; the ONNX tree ensemble compares in float32, so a value within an
    ulp of a split could take the other branch. On a grid this coarse, no value comes within
    an ulp of a midpoint, and onnxruntime reproduces LightGBM; a relative step of 2.4e-4 is
    far below what a tree split resolves anyway."""
    out = np.ascontiguousarray(x, dtype=np.float32)
    bits = out.view(np.uint32)
    drop = 23 - MANTISSA_BITS
    finite = np.isfinite(out)
    bits[finite] = (bits[finite] + np.uint32(1 << (drop - 1))) & np.uint32(
        ~((1 << drop) - 1) & 0xFFFFFFFF
    )
    return out


def _nanmean(a: np.ndarray) -> np.ndarray:
    cnt = (~np.isnan(a)).sum(axis=0)
    return np.where(cnt > 0, np.nansum(a, axis=0) / np.maximum(cnt, 1), np.nan)


def _calendar(panel: DemandPanel, j: np.ndarray) -> list[np.ndarray]:
    d = panel.dates(j)
    day = d.astype("datetime64[D]")
    dow = ((day.astype(np.int64) + 3) % 7).astype(np.float64)
    month = (d.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.float64)
    doy = (day - d.astype("datetime64[Y]")).astype(np.int64).astype(np.float64)
    if panel.freq == "D":
        return [dow, month, doy]
    if panel.freq == "W":
        return [np.floor(doy / 7), month]
    hour = ((d - day).astype("m8[h]").astype(np.int64)).astype(np.float64)
    return [hour, dow]


def targets(
    panel: DemandPanel,
    stats: PanelStats,
    i: np.ndarray,
    t: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
    cumulative: bool = False,
) -> np.ndarray:
    """y[j] / s, or (cumulative) the mean of y over t+1..j / s (a mean, so that residuals of
    every span are on one scale and one conformal shift fits them all); NaN where unknown."""
    j = t + h
    if not cumulative:
        return np.asarray(_at(panel.values, i, j) / scale)
    hi = np.clip(j + 1, 0, panel.n_periods)
    lo = np.clip(t + 1, 0, panel.n_periods)
    total = stats.csum[i, hi] - stats.csum[i, lo]
    n = stats.ccnt[i, hi] - stats.ccnt[i, lo]
    return np.where((n == h) & (j < panel.n_periods), total / h / scale, np.nan)


def sample_rows(
    panel: DemandPanel, horizon: int, per_series: int, target_end: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows: per series, `per_series` random (origin, horizon) pairs whose target
    lies in the series and at or before `target_end`. Origins run from the period before the
    first (no history: the cold-start case) on; a fifth of the rows come from the first
    four seasons of a series, so short histories are well represented."""
    n = panel.n_series
    i = np.repeat(np.arange(n), per_series)
    h = rng.integers(1, horizon + 1, len(i))
    lo = panel.first[i] - 1
    hi = np.minimum(panel.last[i], target_end) - h
    young = rng.random(len(i)) < 0.2
    hi_young = np.minimum(hi, lo + 4 * SEASON[panel.freq])
    top = np.where(young, hi_young, hi)
    t = lo + np.floor(rng.random(len(i)) * (top - lo + 1)).astype(np.int64)
    ok = top >= lo
    return i[ok], t[ok], h[ok]
