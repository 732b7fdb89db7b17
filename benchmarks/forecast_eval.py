"""Demand forecasting: backtests on two simulated worlds, training time, predict throughput.

    python -m benchmarks.forecast_eval [--series 300 --days 730 --origins 3]

Writes benchmarks/results/forecast/: report.md and report.json (this run's summary), and per
world `<config>/report.md`, `report.json`, `fan_chart.png` from `ordersight forecast
backtest` (both strategies, seasonal naive and AutoETS in the same run).

- Backtests: the `default` and the `shifted` simulator configurations, each its own seed,
  so the design is judged on a world it was not tuned on as well.
- Training time: `forecast train` defaults on `--train-series` x `--train-days` daily data
  (1,000 x 1,095 by default), covariates and static attributes included.
- Predict throughput, in-process: `ForecastModel.forecast` for every series at the full
  horizon (series x horizon per second), and the latency of a one-series call.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.cli import main as cli
from engine.forecast import ForecastModel
from engine.forecast.fit import FitOptions, parse_quantiles, train
from engine.forecast.inputs import build_panel
from training.demand_sim import simulate_demand

OUT = Path("benchmarks/results/forecast")
WORLDS = (("default", 11), ("shifted", 23))
QUANTILES = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"


def backtests(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for config, seed in WORLDS:
        data = tmp / config
        cli(
            [
                "forecast",
                "simulate",
                "--series",
                str(args.series),
                "--days",
                str(args.days),
                "--horizon",
                str(args.horizon),
                "--seed",
                str(seed),
                "--config",
                config,
                "--out",
                str(data),
            ]
        )
        report = OUT / config
        code = cli(
            [
                "forecast",
                "backtest",
                "--demand",
                str(data / "demand.parquet"),
                "--covariates",
                str(data / "covariates.parquet"),
                "--static",
                str(data / "static.parquet"),
                "--horizon",
                str(args.horizon),
                "--origins",
                str(args.origins),
                "--strategy",
                "horizon-feature,horizon-buckets",
                "--out",
                str(report),
            ]
        )
        if code:
            raise SystemExit(f"backtest on {config} failed")
        r = json.loads((report / "report.json").read_text())
        simulate = (
            f"ordersight forecast simulate --series {args.series} --days {args.days} "
            f"--horizon {args.horizon} --seed {seed} --config {config} --out {data}"
        )
        note_data(report / "report.md", simulate)
        out[config] = {
            "simulate": simulate,
            "overall": {k: v["established"] for k, v in r["overall"].items()},
            "verdict": r["verdict"],
            "new_and_short": {
                g: r["overall"]["model:horizon-feature"].get(g) for g in ("short", "new")
            },
            "seconds": r["seconds"],
            "reorder_point_coverage": r.get("reorder_point_coverage", {}),
        }
        shutil_rmtree(report / "models")
    return out


def note_data(report_md: Path, simulate: str) -> None:
    """Name the command that made the backtest's (temporary) data folder in its report."""
    text = report_md.read_text()
    head, sep, rest = text.partition("```\n\n")
    report_md.write_text(f"{head}{sep}Data (a temporary folder): `{simulate}`.\n\n{rest}")


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def timing(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    sim = simulate_demand(args.train_series, args.train_days, seed=5, horizon=args.horizon)
    t0 = time.perf_counter()
    panel = build_panel(
        sim.demand, horizon=args.horizon, covariates=sim.covariates, static=sim.static
    )
    t_panel = time.perf_counter() - t0
    levels, labels = parse_quantiles(QUANTILES)
    t0 = time.perf_counter()
    train(panel, tmp / "model", args.horizon, levels, labels, FitOptions(progress=False))
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = ForecastModel.load(tmp / "model")
    t_load = time.perf_counter() - t0
    ids = list(model.series_ids)
    model.forecast(ids, args.horizon)  # warm
    full = []
    for _ in range(5):
        t0 = time.perf_counter()
        model.forecast(ids, args.horizon)
        full.append(time.perf_counter() - t0)
    one = []
    for k in range(200):
        t0 = time.perf_counter()
        model.forecast([ids[k % len(ids)]], args.horizon)
        one.append(time.perf_counter() - t0)
    best = statistics.median(full)
    return {
        "series": args.train_series,
        "days": args.train_days,
        "horizon": args.horizon,
        "panel_seconds": t_panel,
        "train_seconds": t_train,
        "load_seconds": t_load,
        "forecast_all_seconds_median": best,
        "series_x_horizon_per_second": len(ids) * args.horizon / best,
        "one_series_ms_median": 1000 * statistics.median(one),
        "one_series_ms_p99": 1000 * sorted(one)[int(0.99 * len(one)) - 1],
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Demand forecasting benchmark",
        "",
        "```",
        r["command"],
        "```",
        "",
        f"Machine: {r['machine']}. Numbers are from this run; each world's full report "
        "(per origin, fan chart) is in its folder.",
        "",
        "## Backtests (established series, all origins pooled)",
        "",
    ]
    for config, b in r["backtests"].items():
        lines += [
            f"### `{config}` (`{b['simulate']}`)",
            "",
            "| method | MASE | SQL | coverage 80% |",
            "| --- | --- | --- | --- |",
        ]
        for name, s in b["overall"].items():
            lines.append(f"| {name} | {s['mase']:.3f} | {s['sql']:.3f} | {s['coverage80']:.3f} |")
        lines += [
            "",
            "| strategy | MASE gain vs best baseline | SQL gain | coverage 80% | target "
            "met (>= 10%, >= 10%, [0.75, 0.85]) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for s, v in b["verdict"].items():
            lines.append(
                f"| {s} | {v['mase_gain_vs_best_baseline']:+.1%} | "
                f"{v['sql_gain_vs_best_baseline']:+.1%} | {v['coverage80']:.3f} | "
                f"{'yes' if v['target_met'] else 'no'} |"
            )
        for g, s in b["new_and_short"].items():
            if s:
                lines.append(
                    f"\nModel on `{g}` series ({s['series']} series x origins): MASE "
                    f"{s['mase']:.3f}, SQL {s['sql']:.3f}, coverage {s['coverage80']:.3f}."
                )
        rop = b.get("reorder_point_coverage", {})
        for strat, levels in rop.get("levels", {}).items():
            shares = ", ".join(f"{v:.3f} at {lv}" for lv, v in levels.items())
            lines.append(
                f"\nReorder points ({strat}, lead time {rop['lead_periods']} periods): demand "
                f"stayed under them for {shares} (should equal the service level)."
            )
        lines += [
            "",
            "Seconds (all origins): " + ", ".join(f"{k} {v:.0f}" for k, v in b["seconds"].items()),
            "",
        ]
    t = r["timing"]
    lines += [
        "## Training time and predict throughput",
        "",
        f"- data: {t['series']} series x {t['days']} days, covariates and static "
        f"attributes, horizon {t['horizon']}",
        f"- panel from tables: {t['panel_seconds']:.1f} s",
        f"- `forecast train` (defaults: 9 quantile + 6 lead-time boosters): "
        f"{t['train_seconds']:.0f} s",
        f"- `ForecastModel.load` (checksums, sessions, history sums): {t['load_seconds']:.2f} s",
        f"- `forecast(all {t['series']} series, {t['horizon']})` (onnxruntime, one thread): "
        f"{t['forecast_all_seconds_median'] * 1000:.0f} ms median = "
        f"{t['series_x_horizon_per_second']:,.0f} series x horizon per second",
        f"- `forecast(one series, {t['horizon']})`: {t['one_series_ms_median']:.2f} ms "
        f"median, {t['one_series_ms_p99']:.2f} ms p99",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=300)
    p.add_argument("--days", type=int, default=730)
    p.add_argument("--origins", type=int, default=3)
    p.add_argument("--horizon", type=int, default=28)
    p.add_argument("--train-series", type=int, default=1000)
    p.add_argument("--train-days", type=int, default=1095)
    p.add_argument("--skip-backtests", action="store_true")
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r: dict[str, Any] = {
            "command": "python -m benchmarks.forecast_eval " + " ".join(argv or sys.argv[1:]),
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{__import__('os').cpu_count()} cores (shared)",
        }
        r["timing"] = timing(args, tmp)
        print(json.dumps(r["timing"], indent=2), flush=True)
        prev = OUT / "report.json"
        if args.skip_backtests and prev.is_file():
            r["backtests"] = json.loads(prev.read_text())["backtests"]
        else:
            r["backtests"] = backtests(args, tmp)
    (OUT / "report.json").write_text(json.dumps(r, indent=2))
    (OUT / "report.md").write_text(markdown(r))
    print((OUT / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
