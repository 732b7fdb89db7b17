"""A seeded corpus of labelled series for `benchmarks.series_eval`: gauges and counts,
seasonal and not, at many scales, each with the defects of real files (gaps, irregular
steps, duplicate and out-of-order timestamps) and labelled anomalies of one type.

Two configurations: `default` and `other` (other lengths, intervals, noise, scales and
anomaly sizes), so the detector is not judged on the one it was developed against.

A series is generated on a regular grid and then written as points: a count's bucket is
split into one to three points inside the bucket (duplicates that add up), a gauge's
points are jittered inside their bucket, some are dropped (gaps) and some repeated with a
little noise (averaged), and every file is shuffled. Labels are anomaly windows in the
style of the NAB benchmark: 10% of the series' length shared among its anomalies, centred
on each onset (a window never starts before the previous one ends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TYPES = ("level_shift", "spike", "dip", "drift", "variance")
DAY = 86400.0


@dataclass(frozen=True)
class Config:
    name: str
    length: tuple[int, int]  # buckets
    intervals: tuple[float, ...]  # seconds
    noise: tuple[float, float]  # a gauge's noise sd, relative to its level
    size: tuple[float, float]  # anomaly size in noise sd
    repeats: int  # series per (kind, seasonal, type)


CONFIGS = {
    "default": Config("default", (2000, 4000), (300.0, 3600.0), (0.02, 0.05), (4.0, 8.0), 3),
    "other": Config("other", (1500, 3000), (900.0, 1800.0, 7200.0), (0.01, 0.1), (3.0, 6.0), 3),
}


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # count or gauge
    seasonal: bool
    anomaly: str  # one of TYPES
    interval: float
    ts: np.ndarray  # points as in a file: any order, gaps, duplicates
    values: np.ndarray
    windows: list[tuple[float, float]]  # labelled windows, epoch seconds [start, end)
    onsets: list[float]


def _onsets(rng: np.random.Generator, n: int) -> list[int]:
    """One or two onsets between 40% and 90% of the series, at least 10% apart."""
    while True:
        k = int(rng.integers(1, 3))
        starts = sorted(int(v) for v in rng.choice(np.arange(int(0.4 * n), int(0.9 * n)), k))
        if k == 1 or starts[1] - starts[0] >= 0.1 * n:
            return starts


def _one(rng: np.random.Generator, cfg: Config, kind: str, seasonal: bool, anomaly: str, i: int):
    n = int(rng.integers(*cfg.length))
    interval = float(rng.choice(cfg.intervals))
    t = 1.7e9 + 7 * 3600 + interval * np.arange(n)
    tod = (t % DAY) / DAY
    dow = ((t // DAY) + 3) % 7
    shape = np.ones(n)
    if seasonal:
        shape = 1 + 0.5 * np.sin(2 * np.pi * (tod - 0.3)) * (1.2 if interval < 3600 else 1.0)
        shape *= np.where(dow >= 5, 0.8, 1.0)
    size = rng.uniform(*cfg.size)
    starts = _onsets(rng, n)
    if kind == "count":
        rate = float(np.exp(rng.uniform(np.log(2.0), np.log(2000.0))))
        lam = rate * shape
        sd = np.sqrt(lam)  # Poisson noise in count units
        mult = np.ones(n)
        for s in starts:
            rel = size * sd[s] / lam[s]  # the change in noise sd, as a factor of the rate
            if anomaly == "level_shift":
                mult[s:] *= 1 + rng.choice([-1, 1]) * min(rel, 0.8)
            elif anomaly == "spike":
                mult[s : s + int(rng.integers(1, 4))] *= 1 + 2 * rel
            elif anomaly == "dip":
                mult[s : s + 10] *= max(1 - rel, 0.05)
            elif anomaly == "drift":
                m = min(150, n - s)
                mult[s : s + m] *= 1 + rel * np.linspace(0, 1.5, m)
                mult[s + m :] *= 1 + 1.5 * rel
            elif anomaly == "variance":  # over-dispersion: a gamma-mixed rate
                m = min(100, n - s)
                cv2 = (size / 2) ** 2 / lam[s]  # extra variance of size/2 Poisson sd
                mult[s : s + m] *= rng.gamma(1 / cv2, cv2, m)
        values = rng.poisson(lam * mult).astype(np.float64)
    else:
        level = float(np.exp(rng.uniform(np.log(0.5), np.log(5e4)))) * (1 if i % 3 else -1)
        rel = rng.uniform(*cfg.noise)
        sd = rel * abs(level)
        heavy = i % 2 == 1
        noise = sd * (rng.standard_t(3, n) / np.sqrt(3) if heavy else rng.standard_normal(n))
        mean = level + (4 * sd * (shape - 1) / 0.5 if seasonal else 0.0)
        add = np.zeros(n)
        scale = np.ones(n)
        for s in starts:
            sign = rng.choice([-1, 1])
            if anomaly == "level_shift":
                add[s:] += sign * size * sd
            elif anomaly == "spike":
                add[s : s + int(rng.integers(1, 4))] += sign * 2 * size * sd
            elif anomaly == "dip":
                add[s : s + 10] -= size * sd
            elif anomaly == "drift":
                m = min(150, n - s)
                add[s : s + m] += sign * size * sd * np.linspace(0, 1.5, m)
                add[s + m :] += sign * 1.5 * size * sd
            elif anomaly == "variance":
                scale[s : s + min(100, n - s)] *= 1 + size / 2
        values = mean + add + noise * scale
    ts, vals = _as_points(rng, kind, t, values, interval)
    w = 0.1 * n / len(starts)
    windows: list[tuple[float, float]] = []
    for s in starts:
        lo = max(t[s] - interval * w / 2, windows[-1][1] if windows else t[0])
        windows.append((lo, t[s] + interval * w / 2))
    name = f"{kind}_{'seasonal' if seasonal else 'flat'}_{anomaly}_{i}"
    return Series(
        name, kind, seasonal, anomaly, interval, ts, vals, windows, [t[s] for s in starts]
    )


def _as_points(rng, kind, t, values, interval):
    """The grid as a file would have it: split or jittered, gapped, repeated, shuffled."""
    if kind == "count":
        parts = rng.integers(1, 4, t.size)  # one to three points per bucket, adding up
        a = rng.binomial(values.astype(np.int64), 1.0 / parts)
        b = np.where(parts == 3, rng.binomial(values.astype(np.int64) - a, 0.5), 0)
        c = values - a - b
        split = np.stack([a, np.where(parts == 2, c, b), np.where(parts == 3, c, 0)], axis=1)
        use = np.arange(3)[None, :] < parts[:, None]
        ts = np.repeat(t, parts) + interval * rng.uniform(0, 0.999, parts.sum())
        vals = split[use].astype(np.float64)
        ts[0] = t[0]  # the first point opens the grid (`regularize` starts there)
    else:
        keep = rng.random(t.size) > 0.02
        for g in rng.integers(0, t.size, 3):  # three longer gaps
            keep[g : g + int(rng.integers(3, 20))] = False
        keep[0] = keep[-1] = True
        ts = t[keep] + interval * rng.uniform(0, 0.9, keep.sum())
        ts[0] = t[0]
        vals = values[keep]
        dup = rng.random(ts.size) < 0.01
        ts = np.concatenate([ts, ts[dup] + 0.05 * interval])
        jitter = 0.1 * np.std(np.diff(values)) * rng.standard_normal(dup.sum())
        vals = np.concatenate([vals, vals[dup] + jitter])
    perm = rng.permutation(ts.size)
    return ts[perm], vals[perm]


def corpus(config: str, seed: int) -> list[Series]:
    """Every (kind, seasonal, anomaly type) `repeats` times: 60 series at 3 repeats."""
    cfg = CONFIGS[config]
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("gauge", "count"):
        for seasonal in (False, True):
            for anomaly in TYPES:
                for i in range(cfg.repeats):
                    out.append(_one(rng, cfg, kind, seasonal, anomaly, i))
    return out
