"""Training a forecast model folder from a `DemandPanel`.

Design (the reasons; the measured effect is in benchmarks/results/forecast/):
- One global LightGBM booster per quantile (quantile objective), over every series at once,
  in per-series scaled units (see `features`): a series with a short history borrows the
  shape learnt from all the others.
- Direct multi-horizon: the horizon is a feature and one booster serves every h (`strategy
  "horizon-feature"`), or one booster per horizon bucket (`"horizon-buckets"`). Direct rather
  than recursive because quantiles do not recurse: feeding a median back in as a lag makes
  later intervals too narrow, and sample paths would need a simulation per RPC.
- Calibration: the last `calibration_periods` of targets are held out of training; on them,
  each quantile's booster gets a shift, per horizon bucket, equal to the empirical quantile
  (at its own level) of the scaled residuals. That is one-sided split-conformal recalibration
  (conformalized quantile regression, per level): on exchangeable data each level covers its
  nominal share, so the 80% interval (q0.1..q0.9) covers about 80%.
- Reorder points: a second set of boosters predicts quantiles (LEAD_TIME_LEVELS) of demand
  summed over the next h periods directly, calibrated the same way; a sum of per-period
  quantiles would assume perfectly correlated periods and overstate the quantile.
- Export: every booster to ONNX (onnxmltools, TreeEnsembleRegressor, opset 15); the folder is
  refused unless onnxruntime reproduces LightGBM on the calibration rows within PARITY_TOL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from tqdm import tqdm

from engine.checksums import sha256
from engine.errors import InvalidInput
from engine.forecast import features as F
from engine.forecast.model import KIND, MANIFEST, STATE, ForecastModel, save_state
from engine.forecast.panel import SEASON, DemandPanel

LEAD_TIME_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
PARITY_TOL = 1e-5
"""Of max(1, the largest |output|), in scaled units: onnxruntime sums leaves in float32."""
STRATEGIES = ("horizon-feature", "horizon-buckets")


@dataclass(frozen=True)
class FitOptions:
    strategy: str = "horizon-feature"
    rows_per_series: int = 150
    rounds: int = 150
    learning_rate: float = 0.08
    num_leaves: int = 31
    min_data_in_leaf: int = 100
    lead_time: bool = True
    threads: int = 1
    seed: int = 7
    progress: bool = True


def parse_quantiles(text: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
    labels = tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        levels = tuple(float(p) for p in labels)
    except ValueError:
        raise InvalidInput(
            f"--quantiles: comma-separated numbers in (0, 1), is {text!r}", "quantiles"
        ) from None
    if not levels or any(not 0 < q < 1 for q in levels) or list(levels) != sorted(set(levels)):
        raise InvalidInput(f"--quantiles: increasing numbers in (0, 1), is {text!r}", "quantiles")
    return levels, labels


def horizon_buckets(freq: str, horizon: int) -> list[tuple[int, int]]:
    """Horizon buckets of one season each, the rest in the last: 1-7, 8-14, 15-28 for days."""
    m = SEASON[freq]
    edges = [1]
    while edges[-1] + m <= horizon and len(edges) < 3:
        edges.append(edges[-1] + m)
    bounds = [(lo, nxt - 1) for lo, nxt in zip(edges, [*edges[1:], horizon + 1], strict=True)]
    return [b for b in bounds if b[0] <= b[1]]


def _params(opts: FitOptions, alpha: float) -> dict[str, Any]:
    return dict(
        objective="quantile",
        alpha=alpha,
        learning_rate=opts.learning_rate,
        num_leaves=opts.num_leaves,
        min_data_in_leaf=opts.min_data_in_leaf,
        feature_fraction=0.8,
        bagging_fraction=0.8,
        bagging_freq=1,
        num_threads=opts.threads,
        seed=opts.seed,
        verbose=-1,
        deterministic=True,
    )


def _calibration_rows(panel: DemandPanel, horizon: int, cal_start: int) -> tuple[np.ndarray, ...]:
    """Origins every season from `cal_start` on, every horizon whose target the series has."""
    m = SEASON[panel.freq]
    parts = []
    for t0 in range(cal_start, panel.n_periods - 1, m):
        for h in range(1, horizon + 1):
            i = np.flatnonzero((panel.last >= t0 + h) & (panel.first - 1 <= t0))
            parts.append((i, np.full(len(i), t0), np.full(len(i), h)))
    return tuple(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3))


def train(
    panel: DemandPanel,
    out: str | Path,
    horizon: int,
    quantiles: tuple[float, ...],
    labels: tuple[str, ...],
    opts: FitOptions | None = None,
) -> ForecastModel:
    """Fit, calibrate, export and verify; write the folder `out`; return it loaded."""
    opts = opts or FitOptions()
    if opts.strategy not in STRATEGIES:
        raise InvalidInput(f"--strategy must be one of {', '.join(STRATEGIES)}", "strategy")
    if horizon < 1:
        raise InvalidInput(f"--horizon must be >= 1, is {horizon}", "horizon")
    if panel.covariates.shape[1] < panel.n_periods + horizon:
        raise InvalidInput("covariates must cover the horizon", "covariates")
    m = SEASON[panel.freq]
    cal_len = 2 * horizon if panel.n_periods >= 8 * horizon + m else horizon
    cal_start = panel.n_periods - 1 - cal_len
    if cal_start < m:
        raise InvalidInput(
            f"the demand covers {panel.n_periods} periods: training needs at "
            f"least {horizon + 1 + m} for --horizon {horizon}",
            "demand",
        )
    spec = F.FeatureSpec.of(panel)
    stats = F.panel_stats(panel)
    groups, overall = F.series_prior(panel)
    floor = 0.01 * overall
    prior = F.prior_scales(panel, groups, overall)
    rng = np.random.default_rng(opts.seed)
    buckets = horizon_buckets(panel.freq, horizon)

    i, t, h = F.sample_rows(panel, horizon, opts.rows_per_series, cal_start, rng)
    s = F.scales(panel, stats, i, t, prior, floor)
    X = F.build_rows(spec, panel, stats, i, t, h, s)
    y = F.targets(panel, stats, i, t, h, s)
    ci, ct, ch = _calibration_rows(panel, horizon, cal_start)
    cs = F.scales(panel, stats, ci, ct, prior, floor)
    cX = F.build_rows(spec, panel, stats, ci, ct, ch, cs)
    cy = F.targets(panel, stats, ci, ct, ch, cs)
    names = spec.feature_names()

    jobs: list[tuple[str, float, int, np.ndarray, np.ndarray]] = []
    if opts.strategy == "horizon-feature":
        jobs += [(f"q{lab}", q, -1, X, y) for q, lab in zip(quantiles, labels, strict=True)]
    else:
        for b, (lo, hi) in enumerate(buckets):
            sel = (h >= lo) & (h <= hi)
            Xb, yb = X[sel], y[sel]
            jobs += [
                (f"q{lab}_b{b}", q, b, Xb, yb) for q, lab in zip(quantiles, labels, strict=True)
            ]
    if opts.lead_time:
        ly = F.targets(panel, stats, i, t, h, s, cumulative=True)
        jobs += [(f"lt{q}", q, -1, X, ly) for q in LEAD_TIME_LEVELS]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "boosters").mkdir(exist_ok=True)
    bar = tqdm(
        total=len(jobs) * opts.rounds,
        desc="forecast boosters",
        unit="round",
        disable=not opts.progress,
    )
    fitted: dict[str, lgb.Booster] = {}
    datasets: dict[int, lgb.Dataset] = {}
    for name, q, _b, Xb, yb in jobs:
        ok = ~np.isnan(yb)
        key = id(yb)
        if key not in datasets:
            datasets[key] = lgb.Dataset(
                Xb[ok],
                yb[ok],
                feature_name=names,
                free_raw_data=False,
                params={"verbose": -1, "max_bin": 127},
            )
        bar.set_postfix_str(name)
        fitted[name] = lgb.train(
            _params(opts, q), datasets[key], opts.rounds, callbacks=[lambda _env: bar.update(1)]
        )
    bar.close()

    cb = np.zeros(len(ch), dtype=np.int64)
    for k, (lo, _hi) in enumerate(buckets):
        cb[ch >= lo] = k
    shifts: dict[str, list[float]] = {}
    for q, lab in zip(quantiles, labels, strict=True):
        if opts.strategy == "horizon-feature":
            pred = fitted[f"q{lab}"].predict(cX)
        else:
            pred = np.empty(len(cX))
            for b in range(len(buckets)):
                pred[cb == b] = fitted[f"q{lab}_b{b}"].predict(cX[cb == b])
        res = cy - pred
        shifts[str(q)] = [
            _level_shift(res[(cb == b) & ~np.isnan(res)], q) for b in range(len(buckets))
        ]
    lt_shifts = [0.0] * len(LEAD_TIME_LEVELS)
    if opts.lead_time:
        lrng = np.random.default_rng(opts.seed + 1)
        lh = lrng.integers(1, horizon + 1, len(ci))
        lX = F.build_rows(spec, panel, stats, ci, ct, lh, cs)
        lyc = F.targets(panel, stats, ci, ct, lh, cs, cumulative=True)
        okc = ~np.isnan(lyc)
        lt_shifts = [
            _level_shift(lyc[okc] - fitted[f"lt{q}"].predict(lX[okc]), q) for q in LEAD_TIME_LEVELS
        ]

    parity = _export(fitted, out, names, cX)
    save_state(panel.tail(spec.history_periods, horizon), out / STATE)
    boosters = [{"name": name, "level": q, "bucket": b} for name, q, b, _x, _y in jobs]
    files = {f"{b['name']}.onnx": sha256(out / f"{b['name']}.onnx") for b in boosters}
    files[STATE] = sha256(out / STATE)
    manifest = {
        "kind": KIND,
        # the time and the files' digest: two models made in the same second still differ
        "version": dt.datetime.now(dt.UTC).strftime("forecast-%Y%m%dT%H%M%SZ-")
        + hashlib.sha256("".join(sorted(files.values())).encode()).hexdigest()[:8],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "freq": panel.freq,
        "horizon": horizon,
        "quantiles": list(quantiles),
        "quantile_labels": list(labels),
        "strategy": opts.strategy,
        "buckets": buckets,
        "feature_names": names,
        "covariate_names": list(panel.covariate_names),
        "static_names": list(panel.static_names),
        "encoding": {k: list(v) for k, v in panel.encoding.items()},
        "shifts": shifts,
        "lead_time": {
            "levels": list(LEAD_TIME_LEVELS) if opts.lead_time else [],
            "shifts": lt_shifts if opts.lead_time else [],
        },
        "prior": {
            "effects": {c: [[k, v] for k, v in t.items()] for c, t in groups.items()},
            "overall": overall,
        },
        "scale_floor": floor,
        "nonnegative": bool(np.nanmin(panel.values) >= 0)
        if np.isfinite(np.nanmin(panel.values, initial=np.inf))
        else True,
        "training": {
            "rows": int(len(X)),
            "calibration_rows": int(len(cX)),
            "calibration_start": str(panel.dates(np.array(cal_start + 1))),
            "rounds": opts.rounds,
            "series": panel.n_series,
            "periods": panel.n_periods,
            "notes": panel.notes,
        },
        "parity_max_error": parity,
        "boosters": boosters,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return ForecastModel.load(out)


def _level_shift(res: np.ndarray, q: float) -> float:
    """The conformal shift of a level-q booster: the finite-sample q-quantile of residuals."""
    if len(res) == 0:
        return 0.0
    level = min(1.0, max(0.0, np.ceil(q * (len(res) + 1)) / len(res)))
    return float(np.quantile(res, level, method="higher"))


def _export(
    fitted: dict[str, lgb.Booster], out: Path, names: list[str], check: np.ndarray
) -> float:
    """Write `<name>.onnx` and `boosters/<name>.txt`; the worst |onnxruntime - LightGBM|
    over the per-period quantile boosters (scaled units)."""
    import onnxruntime as ort
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    worst = 0.0
    sample = check[: min(len(check), 20000)]
    for name, booster in fitted.items():
        onx = convert_lightgbm(
            booster,
            initial_types=[("x", FloatTensorType([None, len(names)]))],
            target_opset=15,
            zipmap=False,
        )
        (out / f"{name}.onnx").write_bytes(onx.SerializeToString())
        booster.save_model(str(out / "boosters" / f"{name}.txt"))
        sess = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        ref = booster.predict(sample)
        err = float(np.max(np.abs(sess.run(None, {"x": sample})[0].ravel() - ref), initial=0))
        if err > PARITY_TOL * max(1.0, float(np.max(np.abs(ref), initial=0))):
            raise RuntimeError(
                f"ONNX export of {name}: onnxruntime differs from LightGBM by "
                f"{err:.2e} (scaled units), over {PARITY_TOL:.0e} of its range"
            )
        if name.startswith("q"):
            worst = max(worst, err)
    return worst
