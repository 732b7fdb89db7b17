"""The baselines a user would otherwise pick: seasonal naive and statsforecast's AutoETS.

Both answer `[n, H, Q]` quantiles for the H periods after each series' last period of a
`DemandPanel`, like `ForecastModel.predict`, so one evaluation scores all three.

- Seasonal naive: the value one season back (k seasons back at horizons in the k-th season);
  its quantiles add the empirical quantiles of its own k-season errors over the last
  `RESIDUAL_SEASONS` seasons of the series' history, so its interval is as wide as that
  series' own recent errors, not a fitted distribution.
- AutoETS: statsforecast's automatic exponential smoothing per series (season length m),
  with its prediction intervals at level |1 - 2q| read as the q quantile. statsforecast is a
  benchmark dependency, imported only here: `autoets_available()` says whether it is there.
"""

from __future__ import annotations

import numpy as np

from engine.forecast.panel import FREQ_STEP, SEASON, DemandPanel

RESIDUAL_SEASONS = 8
INSTALL_HINT = "pip install -e '.[bench]' (statsforecast)"


def _gather(v: np.ndarray, rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    ok = (idx >= 0) & (idx < v.shape[1])
    return np.where(ok, v[rows[:, None], np.clip(idx, 0, v.shape[1] - 1)], np.nan)


def seasonal_naive(panel: DemandPanel, horizon: int, levels: tuple[float, ...]) -> np.ndarray:
    m = SEASON[panel.freq]
    n = panel.n_series
    rows = np.arange(n)
    t = panel.last
    h = np.arange(1, horizon + 1)
    k = np.ceil(h / m).astype(np.int64)
    point = _gather(panel.values, rows, t[:, None] + h[None, :] - m * k[None, :])
    cnt = (~np.isnan(panel.values)).sum(axis=1)
    fallback = np.nansum(panel.values, axis=1) / np.maximum(cnt, 1)  # no history: 0
    point = np.where(np.isnan(point), fallback[:, None], point)
    out = np.empty((n, horizon, len(levels)))
    span = np.arange(RESIDUAL_SEASONS * m)
    for kk in np.unique(k):
        at = t[:, None] - span[None, :]
        res = _gather(panel.values, rows, at) - _gather(panel.values, rows, at - kk * m)
        with np.errstate(invalid="ignore"):
            qs = np.nanquantile(
                np.where(np.isnan(res).all(axis=1, keepdims=True), 0.0, res), levels, axis=1
            ).T  # [n, Q]
        sel = k == kk
        out[:, sel, :] = point[:, sel, None] + qs[:, None, :]
    out = np.sort(out, axis=2)
    if np.nanmin(panel.values, initial=0.0) >= 0:
        out = np.maximum(out, 0.0)
    return out


def autoets_available() -> bool:
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        return False
    return True


def autoets(panel: DemandPanel, horizon: int, levels: tuple[float, ...]) -> np.ndarray:
    """AutoETS quantiles; NaN for series with fewer than two periods of history."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, Naive

    m = SEASON[panel.freq]
    n = panel.n_series
    out = np.full((n, horizon, len(levels)), np.nan)
    ids, ds, ys = [], [], []
    use = np.flatnonzero(panel.last - panel.first + 1 >= 2)
    for i in use:
        seg = panel.values[i, panel.first[i] : panel.last[i] + 1]
        ids.append(np.full(len(seg), i))
        ds.append(panel.dates(np.arange(panel.first[i], panel.last[i] + 1)))
        ys.append(np.where(np.isnan(seg), 0.0, seg))
    if not ids:
        return out
    df = pd.DataFrame(
        {"unique_id": np.concatenate(ids), "ds": np.concatenate(ds), "y": np.concatenate(ys)}
    )
    freq = {"D": "D", "W": f"{int(FREQ_STEP['W'] / np.timedelta64(1, 'D'))}D", "H": "h"}
    pct = sorted({int(round(abs(1 - 2 * q) * 100)) for q in levels if q != 0.5})
    sf = StatsForecast(
        models=[AutoETS(season_length=m)], freq=freq[panel.freq], n_jobs=1, fallback_model=Naive()
    )
    fc = sf.forecast(df=df, h=horizon, level=pct or None)
    fc = fc.reset_index() if "unique_id" not in fc.columns else fc
    uid = fc["unique_id"].to_numpy().astype(np.int64)
    step = np.tile(np.arange(horizon), len(uid) // horizon)
    for k, q in enumerate(levels):
        lvl = int(round(abs(1 - 2 * q) * 100))
        col = "AutoETS" if lvl == 0 else f"AutoETS-{'lo' if q < 0.5 else 'hi'}-{lvl}"
        out[uid, step, k] = fc[col].to_numpy()
    out = np.sort(out, axis=2)
    if np.nanmin(panel.values, initial=0.0) >= 0:
        out = np.maximum(out, 0.0)
    return out
