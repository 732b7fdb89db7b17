"""The trained model: ONNX parity with LightGBM, quantile order, cold start, verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from engine.errors import InvalidInput, ModelLoadError, NotFound
from engine.forecast import ForecastModel
from engine.forecast.cli import panel_for_model
from engine.forecast.features import build_rows, panel_stats, prior_scales, scales
from engine.forecast.fit import PARITY_TOL
from engine.forecast.panel import DemandPanel
from tests.forecast.conftest import HORIZON
from training.demand_sim import DemandSim


def _rows(model: ForecastModel, panel: DemandPanel) -> np.ndarray:
    """Feature rows at several origins, every horizon, NaN-heavy early origins included."""
    stats = panel_stats(panel)
    prior = prior_scales(panel, model.groups, model.overall)
    n = panel.n_series
    i = np.repeat(np.arange(n), 6 * HORIZON)
    t = np.tile(np.repeat(np.array([-1, 3, 20, 100, 180, panel.n_periods - 1]), HORIZON), n)
    h = np.tile(np.arange(1, HORIZON + 1), 6 * n)
    s = scales(panel, stats, i, t, prior, model.floor)
    return build_rows(model.spec, panel, stats, i, t, h, s)


def test_onnx_matches_lightgbm(model: ForecastModel, model_dir: Path, panel: DemandPanel) -> None:
    X = _rows(model, panel)
    assert np.isnan(X).any()  # missing-value branches are exercised
    for b in model._quantile + model._lead:
        booster = lgb.Booster(model_file=str(model_dir / "boosters" / f"{b.name}.txt"))
        ref = booster.predict(X)
        got = b.session.run(None, {"x": X})[0].ravel()
        assert np.max(np.abs(got - ref)) <= PARITY_TOL * max(1.0, np.abs(ref).max()), b.name


def test_quantiles_never_cross_and_are_nonnegative(model: ForecastModel) -> None:
    fc = model.forecast(list(model.series_ids), HORIZON)
    assert fc.values.shape == (len(model.series_ids), HORIZON, 9)
    assert np.isfinite(fc.values).all()
    assert (np.diff(fc.values, axis=2) >= 0).all()
    assert (fc.values >= 0).all()
    assert fc.labels == tuple(f"0.{k}" for k in range(1, 10))


def test_quantiles_never_cross_on_odd_histories(model: ForecastModel, sim: DemandSim) -> None:
    rng = np.random.default_rng(3)
    demand = sim.demand.to_pydict()
    wild = rng.choice([0.0, 0.0, 0.0, 1.0, 500.0], size=len(demand["value"]))
    table = pa.table({**demand, "value": pa.array(wild)})
    panel = panel_for_model(model, table, covariates=sim.covariates, static=sim.static)
    q = model.predict(panel).values
    assert np.isfinite(q).all() and (np.diff(q, axis=2) >= 0).all()


def test_forecast_answers_in_the_order_asked(model: ForecastModel) -> None:
    ids = [str(model.series_ids[3]), str(model.series_ids[0])]
    fc = model.forecast(ids, 5)
    assert list(fc.series_ids) == ids and fc.values.shape == (2, 5, 9)
    whole = model.forecast(list(model.series_ids), 5)
    np.testing.assert_allclose(fc.values[1], whole.values[0])
    last = model.state.dates(model.state.last[0:1])[0]
    assert fc.dates[1, 0] == last + np.timedelta64(1, "D")


def test_forecast_refuses_unknown_series_and_horizon(model: ForecastModel) -> None:
    with pytest.raises(NotFound, match="nope"):
        model.forecast(["nope"], 3)
    with pytest.raises(InvalidInput, match="horizon must be in 1..14"):
        model.forecast([str(model.series_ids[0])], HORIZON + 1)


def test_short_intermittent_and_new_series_get_forecasts(
    model: ForecastModel, sim: DemandSim
) -> None:
    d = sim.demand.to_pydict()
    last = max(d["date"])
    short_dates = [last - np.timedelta64(k, "D").item() for k in range(3)]
    extra = {
        "series_id": ["short"] * 3 + ["sparse"] * 2,
        "date": short_dates + [min(d["date"]), last],
        "value": [4.0, 0.0, 6.0, 1.0, 0.0],  # sparse: one unit, then zeros for months
    }
    demand = pa.table({k: d[k] + extra[k] for k in ("series_id", "date", "value")})
    st = sim.static.to_pydict()
    st = {
        k: v + ([v[0]] * 3 if k != "series_id" else ["short", "sparse", "brand_new"])
        for k, v in st.items()
    }
    cov = sim.covariates.filter(pa.compute.equal(sim.covariates["series_id"], "s00000"))
    cov = cov.drop_columns(["series_id"])  # one global covariate table for every series
    panel = panel_for_model(model, demand, covariates=cov, static=pa.table(st))
    fc = model.predict(panel)
    for sid in ("short", "sparse", "brand_new"):
        q = fc.values[list(fc.series_ids).index(sid)]
        assert np.isfinite(q).all() and (q >= 0).all() and (np.diff(q, axis=1) >= 0).all()
    new = fc.values[list(fc.series_ids).index("brand_new")]
    assert new[:, -1].max() > 0  # a cold start from the group's scale, not all zeros
    rop = model.reorder_points(panel, 0.95, 7)
    assert np.isfinite(rop).all() and (rop >= 0).all()


def test_reorder_point_grows_with_service_level(model: ForecastModel) -> None:
    ids = list(model.series_ids[:10])
    lo = model.reorder_points(None, 0.8, 7, ids)
    hi = model.reorder_points(None, 0.99, 7, ids)
    assert (hi >= lo).all() and (hi > lo).any()
    with pytest.raises(InvalidInput, match="service-level"):
        model.reorder_points(None, 0.999, 7, ids)
    with pytest.raises(InvalidInput, match="lead-time"):
        model.lead_time_periods(HORIZON + 1)


def test_a_tampered_folder_is_refused(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(model_dir, bad)
    onnx_file = next(bad.glob("q0.5*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match="checksum"):
        ForecastModel.load(bad)
    (bad / "manifest.json").write_text(json.dumps({"kind": "risk"}))
    with pytest.raises(ModelLoadError, match="not a forecast model"):
        ForecastModel.load(bad)


def _weekly_and_hourly() -> dict[str, tuple[pa.Table, int]]:
    rng = np.random.default_rng(0)
    weeks = np.datetime64("2022-01-03", "s") + np.arange(120) * np.timedelta64(7 * 86400, "s")
    hours = np.datetime64("2024-01-01T00", "s") + np.arange(24 * 40) * np.timedelta64(3600, "s")
    out = {}
    for freq, dates, season, horizon in (("W", weeks, 52, 6), ("H", hours, 24, 24)):
        ids = np.repeat(["a", "b", "c"], len(dates))
        phase = np.arange(len(ids)) % len(dates) * 2 * np.pi / season
        value = rng.poisson(np.repeat([3.0, 20.0, 0.3], len(dates)) * (1.3 + np.sin(phase)))
        out[freq] = (
            pa.table({"series_id": ids, "date": np.tile(dates, 3), "value": value.astype(float)}),
            horizon,
        )
    return out


@pytest.mark.parametrize("freq", ["W", "H"])
def test_weekly_and_hourly_models(freq: str, tmp_path: Path) -> None:
    from engine.forecast.fit import FitOptions, parse_quantiles, train
    from engine.forecast.inputs import build_panel

    table, horizon = _weekly_and_hourly()[freq]
    panel = build_panel(table, freq=freq, horizon=horizon)
    levels, labels = parse_quantiles("0.1,0.5,0.9")
    m = train(
        panel,
        tmp_path / "m",
        horizon,
        levels,
        labels,
        FitOptions(rows_per_series=100, rounds=15, progress=False),
    )
    fc = m.forecast(["a", "b", "c"], horizon)
    step = np.timedelta64(7, "D") if freq == "W" else np.timedelta64(1, "h")
    assert (np.diff(fc.dates, axis=1) == step).all()
    assert fc.dates[0, 0] == panel.dates(panel.last[:1])[0] + step
    assert (np.diff(fc.values, axis=2) >= 0).all() and np.isfinite(fc.values).all()
    assert fc.values[1, :, 1].mean() > fc.values[2, :, 1].mean()  # the scales are kept apart
    days = 14 if freq == "W" else 0.5
    assert np.isfinite(m.reorder_points(None, 0.9, m.lead_time_periods(days), ["a"])).all()


def test_a_manifest_lacking_a_key_is_refused_by_name(model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from engine.errors import ModelLoadError

    bad = tmp_path / "m"
    shutil.copytree(model_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    del manifest["horizon"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="manifest lacks 'horizon'"):
        ForecastModel.load(bad)
    (bad / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="is not a forecast model"):
        ForecastModel.load(bad)
