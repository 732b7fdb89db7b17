"""Synthetic daily demand for products in stores, with the signals that move it.

`simulate_demand` draws `n_series` product-store series (a product has a category, a store
has a type and a region) and their daily demand over `days`, plus covariates for `horizon`
days more, so a forecast has the known-in-advance values it needs. Seeded and deterministic:
the same arguments give the same tables.

What drives demand (expected units on day d of series i, before count noise):

    mu = level_i * trend_i(d) * weekly_cat(dow) * yearly_cat(doy) * holiday(d)
         * promo_uplift ** promo_i(d) * (price_i(d) / list_price_i) ** elasticity_cat
         * exp(beta_cat * indicator(d))

- `level_i`: log-normal across series, from well under one unit a day (intermittent series,
  mostly zeros) to hundreds; a category and a store type shift it.
- weekly and yearly profiles per category (yearly: a sinusoid with its own amplitude/phase).
- `holiday`: a fixed set of dates every year (global covariate `holiday`); the holiday itself
  moves demand by a category factor, the two days before ramp up (shopping ahead).
- promotions: per series windows of 3-10 days (covariate `promo`, planned so known ahead).
- price: a list price per series with step changes now and then (covariate `price`).
- an outside indicator (covariate `indicator`, think fuel price or a weather index): a
  mean-reverting random walk shared by all series; each category responds with its own sign.
- new series: a share starts partway through (their rows begin there), so cold start and
  short histories are exercised.
- count noise: negative binomial around `mu` with a per-series dispersion.

Two configurations: `default`, and `shifted` (other seasonal strengths, more intermittent
series, stronger promotions and indicator effects, other holidays), so a model is not judged
on the world it was tuned on. Days with zero demand are sometimes left out of the demand
table (a missing period is zero demand under `--missing zero`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CATEGORIES = ("grocery", "beverages", "household", "personal_care", "electronics", "garden")
STORE_TYPES = ("hyper", "super", "express")
REGIONS = ("north", "south", "east", "west")


@dataclass(frozen=True)
class WorldConfig:
    weekly_strength: float
    yearly_strength: float
    intermittent_share: float
    new_share: float
    promo_uplift: tuple[float, float]
    indicator_effect: float
    holiday_days: tuple[tuple[int, int], ...]  # (month, day)
    elasticity: tuple[float, float]


CONFIGS = {
    "default": WorldConfig(
        weekly_strength=0.35,
        yearly_strength=0.25,
        intermittent_share=0.2,
        new_share=0.1,
        promo_uplift=(1.3, 2.0),
        indicator_effect=0.25,
        holiday_days=((1, 1), (4, 18), (5, 1), (7, 14), (11, 11), (12, 24), (12, 25), (12, 31)),
        elasticity=(-2.0, -0.8),
    ),
    "shifted": WorldConfig(
        weekly_strength=0.5,
        yearly_strength=0.15,
        intermittent_share=0.35,
        new_share=0.15,
        promo_uplift=(1.5, 2.8),
        indicator_effect=0.4,
        holiday_days=((1, 1), (3, 8), (6, 21), (9, 1), (11, 27), (12, 25)),
        elasticity=(-2.5, -0.5),
    ),
}


@dataclass(frozen=True)
class DemandSim:
    demand: pa.Table  # series_id, date, value
    covariates: pa.Table  # series_id, date, holiday, indicator, promo, price
    static: pa.Table  # series_id, category, store, store_type, region


def simulate_demand(
    n_series: int,
    days: int,
    *,
    seed: int = 7,
    config: str = "default",
    horizon: int = 28,
    start: str = "2023-01-02",
) -> DemandSim:
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, is {config!r}")
    if n_series < 1 or days < 1 or horizon < 0:
        raise ValueError("n_series and days must be >= 1 and horizon >= 0")
    cfg = CONFIGS[config]
    rng = np.random.default_rng(seed)
    total = days + horizon
    dates = np.datetime64(start, "D") + np.arange(total)
    dow = (dates.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0
    doy = (dates - dates.astype("datetime64[Y]")).astype("int64")
    month_day = _month_day(dates)

    n_cat, n_store = len(CATEGORIES), max(2, n_series // 12)
    cat = rng.integers(0, n_cat, n_series)
    store = rng.integers(0, n_store, n_series)
    store_type = rng.integers(0, len(STORE_TYPES), n_store)[store]
    region = rng.integers(0, len(REGIONS), n_store)[store]

    weekly = 1.0 + cfg.weekly_strength * rng.uniform(-1, 1, (n_cat, 7))
    weekly[:, 5:] += cfg.weekly_strength * rng.uniform(0, 1.5, (n_cat, 1))  # busier weekends
    weekly /= weekly.mean(axis=1, keepdims=True)
    amp = cfg.yearly_strength * rng.uniform(0.3, 1.5, n_cat)
    phase = rng.uniform(0, 2 * np.pi, n_cat)
    yearly = 1.0 + amp[:, None] * np.sin(2 * np.pi * doy[None, :] / 365.25 + phase[:, None])

    holiday = np.isin(month_day, [m * 100 + d for m, d in cfg.holiday_days]).astype(np.float64)
    before = np.zeros(total)
    for lag, bump in ((1, 0.35), (2, 0.15)):
        before[:-lag] += bump * holiday[lag:]
    hol_effect = rng.uniform(0.2, 2.0, n_cat)  # < 1: closed or quiet; > 1: a shopping day
    holiday_factor = np.where(holiday[None, :] > 0, hol_effect[:, None], 1.0 + before[None, :])

    indicator = np.zeros(total)
    for d in range(1, total):  # mean-reverting random walk
        indicator[d] = 0.98 * indicator[d - 1] + rng.normal(0, 0.2)
    beta = cfg.indicator_effect * rng.choice([-1.0, 1.0], n_cat) * rng.uniform(0.5, 1.5, n_cat)

    level = np.exp(rng.normal(1.5, 1.4, n_series)) * (1.0 + 0.5 * (store_type == 0))
    intermittent = rng.random(n_series) < cfg.intermittent_share
    level[intermittent] = rng.uniform(0.05, 0.6, intermittent.sum())
    trend = rng.normal(0, 0.15, n_series)[:, None] * np.arange(total)[None, :] / 365.0
    dispersion = rng.uniform(2.0, 20.0, n_series)

    promo = np.zeros((n_series, total))
    for i in range(n_series):
        for s in rng.choice(total, size=max(1, total // 60), replace=False):
            promo[i, s : s + rng.integers(3, 11)] = 1.0
    uplift = rng.uniform(*cfg.promo_uplift, n_cat)
    list_price = np.exp(rng.normal(1.5, 0.8, n_series))
    price = np.repeat(list_price[:, None], total, axis=1)
    for i in range(n_series):
        for s in np.sort(rng.choice(total, size=rng.integers(0, 4), replace=False)):
            price[i, s:] = list_price[i] * rng.uniform(0.75, 1.25)
    price = np.round(price, 2)
    elasticity = rng.uniform(*cfg.elasticity, n_cat)

    mu = (
        level[:, None]
        * np.exp(trend)
        * weekly[cat][:, dow]
        * yearly[cat]
        * holiday_factor[cat]
        * uplift[cat][:, None] ** promo
        * (price / list_price[:, None]) ** elasticity[cat][:, None]
        * np.exp(beta[cat][:, None] * indicator[None, :])
    )
    r = dispersion[:, None]
    value = rng.negative_binomial(r, r / (r + mu[:, :days])).astype(np.float64)

    first = np.zeros(n_series, dtype=np.int64)
    new = rng.random(n_series) < cfg.new_share
    first[new] = rng.integers(days // 3, max(days // 3 + 1, days - 10), new.sum())
    ids = np.array([f"s{i:05d}" for i in range(n_series)])

    in_series = np.arange(days)[None, :] >= first[:, None]
    inner = (np.arange(days)[None, :] > first[:, None]) & (np.arange(days)[None, :] < days - 1)
    dropped = (value == 0) & inner & (rng.random((n_series, days)) < 0.3)
    keep = in_series & ~dropped
    rows_i, rows_d = np.nonzero(keep)
    demand = pa.table(
        {
            "series_id": pa.array(ids[rows_i]),
            "date": pa.array(dates[rows_d]),
            "value": pa.array(value[rows_i, rows_d]),
        }
    )
    cov_i, cov_d = np.nonzero(np.arange(total)[None, :] >= first[:, None])
    covariates = pa.table(
        {
            "series_id": pa.array(ids[cov_i]),
            "date": pa.array(dates[cov_d]),
            "holiday": pa.array(holiday[cov_d]),
            "indicator": pa.array(np.round(indicator[cov_d], 4)),
            "promo": pa.array(promo[cov_i, cov_d]),
            "price": pa.array(price[cov_i, cov_d]),
        }
    )
    static = pa.table(
        {
            "series_id": pa.array(ids),
            "category": pa.array(np.array(CATEGORIES)[cat]),
            "store": pa.array(np.array([f"st{s:03d}" for s in store])),
            "store_type": pa.array(np.array(STORE_TYPES)[store_type]),
            "region": pa.array(np.array(REGIONS)[region]),
        }
    )
    return DemandSim(demand, covariates, static)


def _month_day(dates: np.ndarray) -> np.ndarray:
    months = dates.astype("datetime64[M]")
    month = months.astype("int64") % 12 + 1
    day = (dates - months.astype("datetime64[D]")).astype("int64") + 1
    return np.asarray(month * 100 + day)


def write_demand(sim: DemandSim, out: str | Path) -> dict[str, Path]:
    """Write demand.parquet, covariates.parquet and static.parquet into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("demand", "covariates", "static"):
        paths[name] = out / f"{name}.parquet"
        pq.write_table(getattr(sim, name), paths[name])
    return paths
