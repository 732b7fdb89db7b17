"""Forecast accuracy: MASE, scaled quantile loss and interval coverage, NaN targets skipped.

- MASE of a series: mean |y - median| over its horizon divided by the in-sample mean
  |y_t - y_{t-m}| (seasonal naive's one-season error on the history); series whose scale is
  zero (never changed) are left out of the mean over series.
- scaled quantile loss: the sum over series, periods and quantiles of the pinball loss,
  divided by the sum of |y| over the same series and periods.
- coverage: the share of targets inside [lower, upper] (q0.1..q0.9 for the 80% interval).
"""

from __future__ import annotations

import numpy as np


def seasonal_scale(values: np.ndarray, m: int) -> np.ndarray:
    """[n]: mean |y_t - y_{t-m}| over each series' known history (NaN if none)."""
    d = np.abs(values[:, m:] - values[:, :-m])
    cnt = (~np.isnan(d)).sum(axis=1)
    return np.where(cnt > 0, np.nansum(d, axis=1) / np.maximum(cnt, 1), np.nan)


def mase(y: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[n] per-series MASE (NaN where no target or no usable scale)."""
    err = np.abs(y - median)
    cnt = (~np.isnan(err)).sum(axis=1)
    mae = np.where(cnt > 0, np.nansum(err, axis=1) / np.maximum(cnt, 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, mae / scale, np.nan)


def pinball_sum(y: np.ndarray, q: np.ndarray, levels: tuple[float, ...]) -> float:
    """Sum of pinball losses; y [n, H], q [n, H, Q]."""
    lv = np.asarray(levels)[None, None, :]
    diff = y[:, :, None] - q
    loss = np.maximum(lv * diff, (lv - 1) * diff)
    return float(np.nansum(loss))


def scaled_quantile_loss(y: np.ndarray, q: np.ndarray, levels: tuple[float, ...]) -> float:
    denom = float(np.nansum(np.abs(y)))
    return pinball_sum(y, q, levels) / denom if denom > 0 else float("nan")


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    ok = ~np.isnan(y)
    inside = (y >= lower) & (y <= upper) & ok
    return float(inside.sum() / ok.sum()) if ok.any() else float("nan")
