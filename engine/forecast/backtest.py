"""Rolling-origin backtest: the model against seasonal naive and AutoETS, in the same run.

Origins are the last `origins` multiples of the horizon before the panel's end: at each, the
panel is cut (`DemandPanel.cut`), a model is trained on the cut (calibration window and all),
and every method forecasts the next H periods. Scores per origin and overall (metrics.py):
MASE, scaled quantile loss, 80% coverage (the quantiles closest to 0.1 and 0.9).

Series are scored in groups by their history at the origin: `established` (at least
`ESTABLISHED_SEASONS` seasons: where all methods are defined; the headline comparison),
`short` (some history, less than that) and `new` (none: the model's cold start; the
baselines have nothing to say). Writes report.md, report.json and fan_chart.png.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.forecast import metrics as M
from engine.forecast.baselines import INSTALL_HINT, autoets, autoets_available, seasonal_naive
from engine.forecast.fit import FitOptions, train
from engine.forecast.panel import SEASON, DemandPanel

ESTABLISHED_SEASONS = 8


def _scores(
    y: np.ndarray, q: np.ndarray, levels: tuple[float, ...], scale: np.ndarray, rows: np.ndarray
) -> dict[str, float]:
    med = q[:, :, int(np.argmin(np.abs(np.asarray(levels) - 0.5)))]
    lo = int(np.argmin(np.abs(np.asarray(levels) - 0.1)))
    hi = int(np.argmin(np.abs(np.asarray(levels) - 0.9)))
    y, q, med, scale = y[rows], q[rows], med[rows], scale[rows]
    mase = M.mase(y, med, scale)
    return {
        "mase": float(np.nanmean(mase)) if np.isfinite(mase).any() else float("nan"),
        "sql": M.scaled_quantile_loss(y, q, levels),
        "coverage80": M.coverage(y, q[:, :, lo], q[:, :, hi]),
        "series": int(len(rows)),
    }


def backtest(
    panel: DemandPanel,
    horizon: int,
    origins: int,
    levels: tuple[float, ...],
    labels: tuple[str, ...],
    out: str | Path,
    opts: FitOptions | None = None,
    strategies: tuple[str, ...] = ("horizon-feature",),
    command: str = "",
) -> dict[str, Any]:
    opts = opts or FitOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = SEASON[panel.freq]
    have_ets = autoets_available()
    if not have_ets:
        print(
            f"forecast backtest: statsforecast is not installed, so AutoETS is not run; "
            f"install it with {INSTALL_HINT}",
            file=sys.stderr,
        )
    methods = [f"model:{s}" for s in strategies] + ["seasonal_naive"]
    methods += ["autoets"] if have_ets else []
    per_origin: list[dict[str, Any]] = []
    pooled: dict[str, dict[str, list[tuple[np.ndarray, ...]]]] = {}
    timings: dict[str, float] = {k: 0.0 for k in methods}
    fan: dict[str, Any] = {}
    rop_hits: dict[str, list[np.ndarray]] = {s: [] for s in strategies}
    for k in range(origins):
        t0 = panel.n_periods - 1 - horizon * (origins - k)
        if t0 < 4 * m:
            raise ValueError(
                f"--origins {origins} with --horizon {horizon} leaves the first "
                f"origin {t0 + 1} periods of history; give fewer origins"
            )
        cut = panel.cut(t0)
        y = np.full((panel.n_series, horizon), np.nan)
        span = min(horizon, panel.n_periods - 1 - t0)
        y[:, :span] = panel.values[:, t0 + 1 : t0 + 1 + span]
        y[panel.last < t0 + 1] = np.nan  # a series that ended before the origin: no target
        hist = cut.last - cut.first + 1
        groups = {
            "established": np.flatnonzero(hist >= ESTABLISHED_SEASONS * m),
            "short": np.flatnonzero((hist > 0) & (hist < ESTABLISHED_SEASONS * m)),
            "new": np.flatnonzero(hist <= 0),
        }
        groups = {g: r[~np.isnan(y[r]).all(axis=1)] for g, r in groups.items()}
        scale = M.seasonal_scale(cut.values, m)
        # the new and short series have no seasonal scale of their own: the panel's median
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nanmedian(scale))
        preds: dict[str, np.ndarray] = {}
        for strat in strategies:
            t_start = time.perf_counter()
            model = train(
                cut,
                out / "models" / f"origin{k}-{strat}",
                horizon,
                levels,
                labels,
                replace(opts, strategy=strat),
            )
            preds[f"model:{strat}"] = model.predict(cut, horizon).values
            if model.lt_levels:
                rop_hits[strat].append(_reorder_hits(model, cut, y, groups["established"], m))
            timings[f"model:{strat}"] += time.perf_counter() - t_start
        t_start = time.perf_counter()
        preds["seasonal_naive"] = seasonal_naive(cut, horizon, levels)
        timings["seasonal_naive"] += time.perf_counter() - t_start
        if have_ets:
            t_start = time.perf_counter()
            preds["autoets"] = autoets(cut, horizon, levels)
            timings["autoets"] += time.perf_counter() - t_start
        row: dict[str, Any] = {"origin": str(panel.dates(np.array(t0)))[:19], "scores": {}}
        for name, q in preds.items():
            row["scores"][name] = {}
            for g, rows in groups.items():
                if g != "established" and not name.startswith("model"):
                    continue
                row["scores"][name][g] = _scores(y, q, levels, scale, rows)
                bucket = pooled.setdefault(name, {}).setdefault(g, [])
                bucket.append((y[rows], q[rows], scale[rows]))
        per_origin.append(row)
        if k == origins - 1:
            fan = {"cut": cut, "y": y, "preds": preds, "rows": groups["established"], "t0": t0}
    overall: dict[str, dict[str, dict[str, float]]] = {}
    for name, gs in pooled.items():
        overall[name] = {}
        for g, parts in gs.items():
            ys = np.concatenate([p[0] for p in parts])
            qs = np.concatenate([p[1] for p in parts])
            ss = np.concatenate([p[2] for p in parts])
            overall[name][g] = _scores(ys, qs, levels, ss, np.arange(len(ys)))
    rop = {
        s: {str(lv): float(np.concatenate(h)[:, k].mean()) for k, lv in enumerate(ROP_LEVELS)}
        for s, h in rop_hits.items()
        if h
    }
    report = _summary(
        overall,
        methods,
        strategies,
        per_origin,
        timings,
        panel,
        horizon,
        origins,
        levels,
        opts,
        command,
        have_ets,
    )
    report["reorder_point_coverage"] = {"lead_periods": min(horizon, m), "levels": rop}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    from engine.forecast.report import fan_chart, markdown

    fan_chart(out / "fan_chart.png", fan, levels, panel, strategies[0], horizon)
    (out / "report.md").write_text(markdown(report))
    return report


ROP_LEVELS = (0.8, 0.9, 0.95)


def _reorder_hits(
    model: Any, cut: DemandPanel, y: np.ndarray, rows: np.ndarray, m: int
) -> np.ndarray:
    """[series, ROP_LEVELS]: whether the demand over the next `min(H, m)` periods stayed at or
    under the reorder point at each service level (their mean should be the level)."""
    lead = min(y.shape[1], m)
    actual = y[rows, :lead].sum(axis=1)
    known = ~np.isnan(y[rows, :lead]).any(axis=1)
    hits = [model.reorder_points(cut, lv, lead)[rows] >= actual for lv in ROP_LEVELS]
    return np.stack(hits, axis=1)[known]


def _summary(
    overall: dict[str, Any],
    methods: list[str],
    strategies: tuple[str, ...],
    per_origin: list[dict[str, Any]],
    timings: dict[str, float],
    panel: DemandPanel,
    horizon: int,
    origins: int,
    levels: tuple[float, ...],
    opts: FitOptions,
    command: str,
    have_ets: bool,
) -> dict[str, Any]:
    base = [b for b in ("seasonal_naive", "autoets") if b in overall]
    est = {k: v["established"] for k, v in overall.items() if "established" in v}
    best = {metric: min(base, key=lambda b: est[b][metric]) for metric in ("mase", "sql")}
    verdict = {}
    for s in strategies:
        e = est[f"model:{s}"]
        gain = {metric: 1 - e[metric] / est[best[metric]][metric] for metric in ("mase", "sql")}
        verdict[s] = {
            "mase_gain_vs_best_baseline": gain["mase"],
            "sql_gain_vs_best_baseline": gain["sql"],
            "coverage80": e["coverage80"],
            "target_met": bool(
                gain["mase"] >= 0.10 and gain["sql"] >= 0.10 and 0.75 <= e["coverage80"] <= 0.85
            ),
        }
    return {
        "command": command,
        "data": {
            "series": panel.n_series,
            "periods": panel.n_periods,
            "freq": panel.freq,
            "covariates": list(panel.covariate_names),
            "static": list(panel.static_names),
        },
        "horizon": horizon,
        "origins": origins,
        "quantiles": list(levels),
        "fit": {k: v for k, v in vars(opts).items() if k not in ("progress",)},
        "autoets": "run" if have_ets else f"not run: statsforecast missing ({INSTALL_HINT})",
        "best_baseline": best,
        "overall": overall,
        "verdict": verdict,
        "per_origin": per_origin,
        "seconds": timings,
        "methods": methods,
    }
