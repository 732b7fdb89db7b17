"""Demand forecasting in `make bench`: training time on 1,000 series x 3 years of daily data,
then forecast throughput in-process and over gRPC from a real `ordersight serve`.

    python -m benchmarks.forecast_serving [--series 1000] [--days 1095] [--seconds 10]
        [--out benchmarks/results]

Over gRPC a closed loop of `concurrency` callers (grpc.aio, one client process) asks
Forecast for `series` series x the model's horizon per call: one series per call at 1 and 16
callers (a planner's lookups), 100 series per call at 4 (a batch refresh). Reported: calls/s,
series x periods/s, p50/p99 per call. The in-process figures are `forecast_eval.timing`'s.
Writes forecast_serving.json and forecast_serving.md to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from benchmarks.forecast_eval import timing
from benchmarks.servers import server_process, wait_serving
from engine.forecast import ForecastModel

PORT = 50651
HORIZON = 28
SHAPES = ((1, 1), (1, 16), (100, 4))  # (series per call, concurrent callers)


async def _drive(target: str, ids: list[str], per_call: int, conc: int, seconds: float):
    lat: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ForecastingStub(channel)
        end = time.perf_counter() + seconds

        async def caller(k: int) -> None:
            i = k * per_call
            while time.perf_counter() < end:
                batch = [ids[(i + j) % len(ids)] for j in range(per_call)]
                t0 = time.perf_counter()
                await stub.Forecast(pb.ForecastRequest(series_ids=batch, horizon=HORIZON))
                lat.append(time.perf_counter() - t0)
                i += per_call * conc

        await stub.Forecast(pb.ForecastRequest(series_ids=ids[:1], horizon=HORIZON))  # warm
        t0 = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(conc)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "series_per_call": per_call,
        "concurrency": conc,
        "calls_per_s": len(lat) / wall,
        "series_x_periods_per_s": len(lat) * per_call * HORIZON / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[max(int(0.99 * len(lat)) - 1, 0)],
    }


def measure(series: int, days: int, seconds: float, logs: Path, log=print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        args = argparse.Namespace(train_series=series, train_days=days, horizon=HORIZON)
        log(f"  training {series} series x {days} days")
        inproc = timing(args, Path(tmp))
        log(
            f"  trained in {inproc['train_seconds']:.0f} s; in-process "
            f"{inproc['series_x_horizon_per_second']:,.0f} series x periods/s"
        )
        model_dir = Path(tmp) / "model"
        ids = [str(s) for s in ForecastModel.load(model_dir).series_ids]
        cmd = [
            sys.executable, "-m", "engine.cli", "serve", "--port", str(PORT),
            "--forecast-models", str(model_dir), "--models", "models/default",
        ]  # fmt: skip
        grpc_rows = []
        with server_process(cmd, logs / "forecast-server.log") as proc:
            wait_serving(f"127.0.0.1:{PORT}", proc)
            for per_call, conc in SHAPES:
                row = asyncio.run(_drive(f"127.0.0.1:{PORT}", ids, per_call, conc, seconds))
                log(
                    f"  gRPC {per_call} series/call x {conc}: {row['calls_per_s']:,.0f} calls/s, "
                    f"{row['series_x_periods_per_s']:,.0f} series x periods/s, "
                    f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms"
                )
                grpc_rows.append(row)
    return {"in_process": inproc, "grpc": grpc_rows}


def markdown(r: dict[str, Any]) -> str:
    ip = r["in_process"]
    lines = [
        "## Demand forecasting",
        "",
        f"Training on {ip['series']} series x {ip['days']} days (horizon {ip['horizon']}, "
        f"9 quantiles + lead-time model): {ip['train_seconds']:.0f} s. In-process `forecast`: "
        f"{ip['series_x_horizon_per_second']:,.0f} series x periods/s for all series at once, "
        f"one series {ip['one_series_ms_median']:.2f} ms (p99 {ip['one_series_ms_p99']:.2f}).",
        "",
        "| over gRPC | calls/s | series x periods/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for g in r["grpc"]:
        lines.append(
            f"| {g['series_per_call']} series/call, {g['concurrency']} callers "
            f"| {g['calls_per_s']:,.0f} | {g['series_x_periods_per_s']:,.0f} "
            f"| {g['p50_ms']:.1f} | {g['p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--days", type=int, default=1095)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    from benchmarks.run import machine  # run imports this module

    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    r = {
        "command": "python -m benchmarks.forecast_serving " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        **measure(args.series, args.days, args.seconds, logs),
    }
    (out / "forecast_serving.json").write_text(json.dumps(r, indent=2))
    md = f"Command: `{r['command'].strip()}`\n\n" + markdown(r)
    (out / "forecast_serving.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
