"""`ordersight forecast simulate | train | predict | backtest | query`.

Bad input raises `InvalidInput` naming the column and row; `engine.cli.main` prints it as
`ordersight forecast: error: ...` and exits with 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from engine.errors import InvalidInput

DEFAULT_QUANTILES = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"


def _data_options(s: argparse.ArgumentParser, freq: bool = True) -> None:
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--demand", help="CSV or Parquet: series_id, date, value (one row per series and period)"
    )
    g.add_argument(
        "--orders",
        help="an order history (Parquet or CSV, the engine's history "
        "schema): demand is derived from its items",
    )
    s.add_argument(
        "--level",
        choices=("channel", "category", "sku"),
        default="category",
        help="with --orders: one series per channel, item category or sku",
    )
    s.add_argument(
        "--measure",
        choices=("units", "value"),
        default="units",
        help="with --orders: item quantities, or quantity x unit price (minor units)",
    )
    s.add_argument(
        "--covariates",
        help="CSV or Parquet: date, optional series_id, then numeric "
        "or categorical columns, covering the history and the horizon; a column "
        "named holiday (0/1) also gives holiday-proximity features",
    )
    s.add_argument(
        "--static",
        help="CSV or Parquet: series_id, then attributes; a series "
        "listed here without demand gets a cold-start forecast",
    )
    if freq:
        s.add_argument(
            "--freq", choices=("D", "W", "H"), default="D", help="period: D day, W week, H hour"
        )
    s.add_argument(
        "--missing",
        choices=("zero", "nan"),
        default="zero",
        help="a period missing inside a series: zero demand, or unknown",
    )


def _fit_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--quantiles",
        default=DEFAULT_QUANTILES,
        help=f"comma-separated levels in (0, 1) (default {DEFAULT_QUANTILES})",
    )
    s.add_argument("--rounds", type=int, default=150, help="boosting rounds per booster")
    s.add_argument(
        "--rows-per-series",
        type=int,
        default=150,
        help="training rows sampled per series (origin, horizon pairs)",
    )
    s.add_argument("--seed", type=int, default=7)


def _tables(args: argparse.Namespace, freq: str) -> dict[str, Any]:
    from engine.forecast.inputs import demand_from_orders, read_frame

    if args.orders:
        demand = demand_from_orders(args.orders, args.level, args.measure, freq)
    else:
        demand = read_frame(args.demand, "demand")
    return {
        "demand": demand,
        "covariates": read_frame(args.covariates, "covariates") if args.covariates else None,
        "static": read_frame(args.static, "static") if args.static else None,
        "where": (str(args.orders or args.demand), str(args.covariates), str(args.static)),
    }


def _panel(args: argparse.Namespace, horizon: int) -> Any:
    from engine.forecast.inputs import build_panel

    return build_panel(
        freq=args.freq, missing=args.missing, horizon=horizon, **_tables(args, args.freq)
    )


def panel_for_model(
    model: Any,
    demand: pa.Table,
    *,
    covariates: pa.Table | None = None,
    static: pa.Table | None = None,
    missing: str = "zero",
    where: tuple[str, str, str] = ("demand", "covariates", "static"),
) -> Any:
    """A panel of new data laid out the way `model` was trained: its freq, categories and
    columns (a column it never saw is ignored; one it uses and the files lack is an error)."""
    from engine.forecast.inputs import build_panel

    return build_panel(
        demand,
        freq=model.freq,
        missing=missing,
        horizon=model.horizon,
        covariates=covariates,
        static=static,
        encoding=model.encoding,
        covariate_names=model.spec.covariate_names,
        static_names=model.spec.static_names,
        where=where,
    )


def _options(args: argparse.Namespace, strategy: str) -> Any:
    from engine.forecast.fit import FitOptions

    if args.rounds < 1 or args.rows_per_series < 1:
        raise InvalidInput("--rounds and --rows-per-series must be >= 1", "rounds")
    return FitOptions(
        strategy=strategy,
        rounds=args.rounds,
        rows_per_series=args.rows_per_series,
        seed=args.seed,
        progress=sys.stderr.isatty() or args.progress,
    )


def _train(args: argparse.Namespace) -> int:
    from engine.forecast.fit import parse_quantiles, train

    levels, labels = parse_quantiles(args.quantiles)
    if args.horizon < 1:
        raise InvalidInput(f"--horizon must be >= 1, is {args.horizon}", "horizon")
    t0 = time.perf_counter()
    panel = _panel(args, args.horizon)
    model = train(panel, args.out, args.horizon, levels, labels, _options(args, args.strategy))
    print(
        f"trained {model.version} on {panel.n_series} series x {panel.n_periods} periods in "
        f"{time.perf_counter() - t0:.1f}s -> {args.out}"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from engine.forecast.model import ForecastModel

    model = ForecastModel.load(args.models)
    if args.freq and args.freq != model.freq:
        raise InvalidInput(f"--freq {args.freq}: the model was trained on {model.freq}", "freq")
    tables = _tables(args, model.freq)
    panel = panel_for_model(
        model,
        tables["demand"],
        covariates=tables["covariates"],
        static=tables["static"],
        missing=args.missing,
        where=tables["where"],
    )
    horizon = args.horizon or model.horizon
    fc = model.predict(panel, horizon)
    n, h, _q = fc.values.shape
    cols: dict[str, Any] = {"series_id": pa.array(np.repeat(fc.series_ids, h).astype(str))}
    dates = fc.dates.ravel()
    cols["date"] = pa.array(dates.astype("datetime64[D]") if model.freq != "H" else dates)
    for k, lab in enumerate(fc.labels):
        cols[f"q{lab}"] = pa.array(fc.values[:, :, k].ravel())
    if (args.service_level is None) != (args.lead_time is None):
        raise InvalidInput("--service-level and --lead-time go together", "lead_time")
    if args.service_level is not None:
        rop = model.reorder_points(
            panel, args.service_level, model.lead_time_periods(args.lead_time)
        )
        cols["reorder_point"] = pa.array(np.repeat(rop, h))
    _write(pa.table(cols), Path(args.out))
    print(f"wrote {n} series x {h} periods to {args.out}")
    return 0


def _write(table: pa.Table, out: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        pacsv.write_csv(table, out)
    else:
        pq.write_table(table, out)


def _backtest(args: argparse.Namespace) -> int:
    from engine.forecast.backtest import backtest
    from engine.forecast.fit import STRATEGIES, parse_quantiles

    levels, labels = parse_quantiles(args.quantiles)
    strategies = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    for s in strategies:
        if s not in STRATEGIES:
            raise InvalidInput(
                f"--strategy: {s!r} is not one of {', '.join(STRATEGIES)}", "strategy"
            )
    if args.origins < 1 or args.horizon < 1:
        raise InvalidInput("--origins and --horizon must be >= 1", "origins")
    panel = _panel(args, args.horizon)
    command = _command(args)
    r = backtest(
        panel,
        args.horizon,
        args.origins,
        levels,
        labels,
        args.out,
        _options(args, strategies[0]),
        strategies,
        command,
    )
    for s, v in r["verdict"].items():
        print(
            f"{s}: MASE {v['mase_gain_vs_best_baseline']:+.1%}, SQL "
            f"{v['sql_gain_vs_best_baseline']:+.1%} vs the best baseline; coverage80 "
            f"{v['coverage80']:.3f}"
        )
    print(f"report in {Path(args.out) / 'report.md'}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The backtest's own command line, rebuilt from its options (for the report)."""
    parts = ["ordersight", "forecast", "backtest"]
    for opt in ("demand", "orders", "level", "measure", "covariates", "static", "freq",
                "missing", "horizon", "origins", "strategy", "quantiles", "rounds",
                "rows_per_series", "seed", "out"):  # fmt: skip
        value = getattr(args, opt)
        if value is not None and not (opt in ("level", "measure") and not args.orders):
            parts += [f"--{opt.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def _simulate(args: argparse.Namespace) -> int:
    from training.demand_sim import simulate_demand, write_demand

    if args.series < 1 or args.days < 1:
        raise InvalidInput("--series and --days must be >= 1", "series")
    sim = simulate_demand(
        args.series, args.days, seed=args.seed, config=args.config, horizon=args.horizon
    )
    paths = write_demand(sim, args.out)
    print(
        f"wrote {sim.demand.num_rows} demand rows, covariates to {args.horizon} days past "
        f"the end, and static attributes to {', '.join(str(p) for p in paths.values())}"
    )
    return 0


def _query(args: argparse.Namespace) -> int:
    """A running engine's forecasts (Forecasting/Forecast) as CSV on stdout."""
    import csv

    import grpc
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    from engine.client import channel as _channel

    ids = [x for x in args.series.split(",") if x]
    with _channel(args) as channel:
        stub = pb_grpc.ForecastingStub(channel)
        try:
            r = stub.Forecast(
                pb.ForecastRequest(series_ids=ids, horizon=args.horizon), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    out = csv.writer(sys.stdout)
    out.writerow(["series_id", "date", *(f"q{q:g}" for q in r.quantiles)])
    for s in r.series:
        for p in s.periods:
            day = p.period_start.ToDatetime().isoformat(sep=" ")
            out.writerow([s.series_id, day, *(f"{v:.4g}" for v in p.values)])
    print(f"model {r.model_version}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "forecast", help="probabilistic demand forecasts: simulate, train, predict, backtest"
    )
    verbs = p.add_subparsers(dest="forecast_command", required=True)

    from engine.client import client_options as _client_options

    s = verbs.add_parser("query", help="a running engine's forecasts (gRPC Forecasting), as CSV")
    s.add_argument("--addr", default="127.0.0.1:50051")
    s.add_argument("--series", required=True, help="series ids, comma-separated")
    s.add_argument("--horizon", type=int, default=0, help="periods (default: the model's)")
    s.add_argument("--timeout", type=float, default=10.0)
    _client_options(s)
    s.set_defaults(func=_query)

    s = verbs.add_parser("train", help="train a global quantile model folder")
    _data_options(s)
    s.add_argument("--horizon", type=int, required=True, help="periods ahead to forecast")
    s.add_argument(
        "--strategy",
        choices=("horizon-feature", "horizon-buckets"),
        default="horizon-feature",
        help="one booster per quantile for every horizon, or one per quantile and horizon bucket",
    )
    _fit_options(s)
    s.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    s.add_argument("--out", required=True, help="model folder to write")
    s.set_defaults(func=_train)

    s = verbs.add_parser("predict", help="quantiles for the periods after each series' last")
    s.add_argument("--models", required=True, help="a folder written by forecast train")
    _data_options(s, freq=False)
    s.add_argument("--freq", choices=("D", "W", "H"), help="must match the model's (default)")
    s.add_argument("--horizon", type=int, help="periods (default: the model's)")
    s.add_argument(
        "--service-level",
        type=float,
        help="with --lead-time: add a column "
        "reorder_point, this quantile of the demand summed over the lead time",
    )
    s.add_argument("--lead-time", type=float, help="days (whole periods, rounded up)")
    s.add_argument("--out", required=True, help=".csv or .parquet: series_id, date, q<level>...")
    s.set_defaults(func=_predict)

    s = verbs.add_parser(
        "backtest",
        help="rolling-origin backtest against seasonal naive and "
        "AutoETS, with report.md, report.json and a fan chart",
    )
    _data_options(s)
    s.add_argument("--horizon", type=int, required=True)
    s.add_argument("--origins", type=int, default=3, help="rolling origins, one horizon apart")
    s.add_argument(
        "--strategy",
        default="horizon-feature",
        help="comma-separated: horizon-feature, horizon-buckets (each trained and scored)",
    )
    _fit_options(s)
    s.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    s.add_argument("--out", required=True, help="report folder")
    s.set_defaults(func=_backtest)

    s = verbs.add_parser(
        "simulate", help="write simulated demand.parquet, covariates.parquet and static.parquet"
    )
    s.add_argument("--series", type=int, required=True)
    s.add_argument("--days", type=int, required=True)
    s.add_argument("--horizon", type=int, default=28, help="days of covariates past the end")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--config", choices=("default", "shifted"), default="default")
    s.add_argument("--out", required=True, help="folder")
    s.set_defaults(func=_simulate)
