"""Probabilistic demand forecasting: quantiles per series and period, from a global model.

Offline: `ordersight forecast simulate | train | predict | backtest` (engine/forecast/cli.py).
In-process (what a gRPC servicer calls; every method is safe to call from several threads,
since nothing is written after `load`):

    from engine.forecast import ForecastModel
    model = ForecastModel.load(path)            # verifies manifest + sha256, opens sessions
    fc = model.forecast(series_ids, horizon)    # -> Forecast
    fc.series_ids  # str [n], as asked
    fc.dates       # datetime64[s] [n, horizon]: the periods after each series' last
    fc.values      # float64 [n, horizon, len(fc.quantiles)], non-decreasing along the last axis
    fc.quantiles   # (0.1, ..., 0.9); fc.labels: as given at training ("0.1", ...)
    model.reorder_points(None, service_level, model.lead_time_periods(days), series_ids)
    model.version, model.horizon, model.freq, model.series_ids

`forecast` answers from the history kept in the model folder (state.npz: the tail of the
training demand, its covariates up to `horizon` periods past its end, static attributes);
`horizon` is 1..model.horizon (else InvalidInput), an unknown series is NotFound. Cost: a few
NumPy gathers and one onnxruntime run per quantile over all requested rows. A model with new
data (or new series, cold-started from static attributes) is `model.predict(panel)`, with
`panel = engine.forecast.inputs.build_panel(...)` made with the model's encoding
(`engine.forecast.cli.panel_for_model` does that from files).

Parts: `inputs` (files and their rules) → `panel` (dense arrays on one grid) → `features`
(rows by vectorised gathers) → `fit` (LightGBM quantile boosters, conformal shifts, ONNX
export) → `model` (load, verify, forecast) ; `baselines`, `metrics`, `backtest` for the
evaluation.
"""

from engine.forecast.model import Forecast, ForecastModel

__all__ = ["Forecast", "ForecastModel"]
