"""`make bench`: OrderSight against the gRPC floor, MLServer and the tree runtimes, in one run.

Starts four servers on 127.0.0.1 (OrderSight with its default models and a warmed velocity
state; a bare grpc.aio echo server; the link floor, OrderSight's front before an engine that
scores nothing; MLServer with mlserver-lightgbm serving the same tier-two model), drives each
with the same multi-process load generator, then measures ScoreBatch, score-file, the
in-process stages and the tier-two runtimes, and offers OrderSight more than it can answer
in open loop (`benchmarks.overload`). Writes results.json, results.md,
latency_throughput.png, overload.json and overload.md to benchmarks/results/ and commits
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks import (
    batch,
    forecast_serving,
    governance,
    mlserver,
    overload,
    replication,
    stages,
)
from benchmarks.loadgen import Load, run
from benchmarks.paired import paired_point
from benchmarks.paired_servers import durability_rounds, serving_rounds, store_rounds
from benchmarks.report import markdown, plot
from benchmarks.servers import batch_stats, cpu_by_process, server_process, wait_port, wait_serving
from engine.codec.history import read_history
from engine.codec.order_messages import orders_from_table
from engine.features import matrix as features
from engine.features.velocity import VelocityState

ROOT = Path(__file__).resolve().parent.parent
SCORE = "/ordersight.v1.OrderRisk/Score"
CONCURRENCY = (1, 16, 64, 256)
RATES = (500, 1000, 2000)
PAIRED_SECONDS = 3.0  # per server and round (`benchmarks.paired`)
PORTS = {"ordersight": 50151, "echo": 50152, "mlserver": 50153, "link-floor": 50154}
TAIL = 50_000  # orders sent as Score calls, held out of the servers' warm-up


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ("numpy", "numba", "onnxruntime", "lightgbm", "grpcio", "pyarrow", "tl2cgen")
    versions = {}
    for p in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[p] = metadata.version(p)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "packages": versions,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def sweep(
    name: str,
    target: str,
    method: str,
    requests: list[bytes],
    seconds: float,
    log: Any,
    metrics_url: str | None = None,
    server_pid: int | None = None,
) -> list[dict[str, Any]]:
    rows = []
    loads = [
        Load(target, method, concurrency=c, duration_s=seconds, procs=1 if c == 1 else 2)
        for c in CONCURRENCY
    ]
    loads += [Load(target, method, rate=r, duration_s=seconds, procs=2) for r in RATES]
    for load in loads:
        s0, n0 = batch_stats(metrics_url)
        cpu0 = cpu_by_process(server_pid) if server_pid else {}
        r = {"target": name, **run(load, requests)}
        cpu1 = cpu_by_process(server_pid) if server_pid else {}
        s1, n1 = batch_stats(metrics_url)
        if n1 > n0:  # Score calls per micro-batch during this load point
            r["mean_batch"] = (s1 - s0) / (n1 - n0)
        if cpu1 and r["completed"]:  # server CPU per answered call, by role
            by_role: dict[str, float] = {}
            for pid, (role, cpu) in cpu1.items():
                by_role[role] = by_role.get(role, 0.0) + cpu - cpu0.get(pid, (role, 0.0))[1]
            r["server_cpu_us"] = sum(by_role.values()) / r["completed"] * 1e6
            r["server_cpu_us_by_role"] = {k: v / r["completed"] * 1e6 for k, v in by_role.items()}
        log(
            f"  {name:14s} c={r['concurrency']} rate={r['rate']}: {r['calls_per_s']:,.0f}/s "
            f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms, client {r['client_cpu_cores']:.2f}"
            f" cores, server {r.get('server_cpu_us', float('nan')):.0f} us/call"
        )
        rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models/default"))
    p.add_argument("--history", default=str(ROOT / "models/default-history.parquet"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--seconds", type=float, default=5.0, help="per load point")
    p.add_argument("--skip-mlserver", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models, history_path = Path(args.models), Path(args.history)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    results: dict[str, Any] = {
        "machine": machine(),
        "command": "make bench",
        "held_out_orders": TAIL,
    }
    history = pq.read_table(history_path)
    # The servers are warmed with the history up to its last TAIL orders and then sent
    # those: orders they have not seen, as a live engine gets.
    head_path = logs / "warm-head.parquet"
    pq.write_table(history.slice(0, history.num_rows - TAIL), head_path)
    tail = history.slice(history.num_rows - TAIL, TAIL)
    requests = [o.SerializeToString() for o in orders_from_table(tail)]
    # MLServer gets the same orders' tier-two features, as the engine computes them.
    hist = read_history(history_path)
    X_all = features.replay(hist.arrays, hist.labels, hist.known_at, VelocityState())
    X_tail = X_all[-TAIL:]

    log("Score, closed and open loop:")
    loads: list[dict[str, Any]] = []
    py = sys.executable
    cores = os.cpu_count() or 1
    for name, workers in (("ordersight-1w", 1), (f"ordersight-{cores}w", cores)):
        serve = [
            py, "-m", "engine.cli", "serve", "--models", str(models),
            "--port", str(PORTS["ordersight"]), "--warm-from", str(head_path),
            "--workers", str(workers),
        ]  # fmt: skip
        metrics_port = PORTS["ordersight"] + 30
        env = {"ORDERSIGHT_METRICS_PORT": str(metrics_port)}
        with server_process(serve, logs / f"{name}.log", env) as proc:
            target = f"127.0.0.1:{PORTS['ordersight']}"
            wait_serving(target, proc)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            loads += sweep(name, target, SCORE, requests, args.seconds, log, metrics_url, proc.pid)
            if workers == 1:
                log("ScoreBatch:")
                results["bulk"] = batch.score_batch(target, history)
                for r in results["bulk"]:
                    log(f"  {r['rpc']:22s} {r['orders']:>7,}: {r['orders_per_s']:,.0f} orders/s")
    if cores >= 2:
        log("Scaling, load generator pinned to CPU 0, c=64:")
        results["scaling"] = _scaling(models, head_path, requests, args.seconds, logs, log)
    log("Two replicas over NATS JetStream:")
    serve = [
        py,
        "-m",
        "engine.cli",
        "serve",
        "--models",
        str(models),
        "--warm-from",
        str(head_path),
    ]
    ports = (PORTS["ordersight"] + 100, PORTS["ordersight"] + 101)
    results["replication"] = replication.replicated_load(serve, ports, requests, args.seconds, logs)
    rep = results["replication"]
    log(
        f"  {rep['calls_per_s']:,.0f} calls/s over both, p99 {rep['p99_ms']:.2f} ms; lag "
        + ", ".join(f"{k} mean {v['mean_ms']:.2f} ms" for k, v in rep["lag"].items())
    )
    echo = [py, "-m", "benchmarks.echo_server", "--port", str(PORTS["echo"])]
    with server_process(echo, logs / "echo.log") as proc:
        target = f"127.0.0.1:{PORTS['echo']}"
        wait_port(target)
        loads += sweep("echo", target, SCORE, requests, args.seconds, log, None, proc.pid)
    floor = [py, "-m", "benchmarks.link_floor", "--port", str(PORTS["link-floor"])]
    with server_process(floor, logs / "link-floor.log") as proc:
        target = f"127.0.0.1:{PORTS['link-floor']}"
        wait_serving(target, proc)
        loads += sweep("link-floor", target, SCORE, requests, args.seconds, log, None, proc.pid)
    log("Paired rounds (echo, link floor, ordersight-1w serving at once, driven in turn):")
    port = PORTS["ordersight"] + 200
    results["paired"] = serving_rounds(models, head_path, requests, logs, log, port, SCORE)
    log("Decision log durability, paired rounds:")
    results["durability"] = durability_rounds(models, head_path, requests, logs, log, port, SCORE)
    log("The review store, paired rounds (governance.md):")
    results["store"] = store_rounds(models, head_path, requests, logs, log, port, SCORE)
    (out / "governance.md").write_text(governance.markdown(results["store"], results["machine"]))
    log("Open-loop overload (overload.md, overload.json):")
    ov = overload.measure(models, head_path, requests, logs, log, PORTS["ordersight"] + 300)
    overload.write({"machine": results["machine"], **ov}, out)
    if not args.skip_mlserver:
        results["mlserver"] = _mlserver(models, X_tail, args.seconds, logs, loads, log)
    results["score"] = loads

    log("score-file:")
    results["bulk"].append(batch.score_file_rate(models, history_path, logs / "scored.parquet"))
    log(f"  {results['bulk'][-1]['orders_per_s']:,.0f} orders/s")
    log("In-process stages:")
    results["stages"] = stages.stage_costs(models, history_path)
    results["tier2_runtimes"] = stages.tier2_runtimes(models, X_tail[:4096], logs / "tier2_tl2.so")
    results["explain_runtimes"] = stages.explain_runtimes(models, X_tail)
    log("Demand forecasting (training on 1,000 series x 3 years; Forecast in-process, gRPC):")
    results["forecast"] = forecast_serving.measure(1000, 1095, args.seconds * 2, logs, log)
    results["targets"] = targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    plot(results, out / "latency_throughput.png")
    log((out / "results.md").read_text())
    return 0


def _scaling(
    models: Path, head: Path, requests: list[bytes], seconds: float, logs: Path, log: Any
) -> list[dict[str, Any]]:
    """Score at concurrency 64 with the generator on CPU 0: the server on CPU 1 alone (one
    core's worth), then on every CPU with one and with two fronts."""
    rows = []
    cores = os.cpu_count() or 1
    every = tuple(range(cores))
    for workers, cpus in ((1, (1,)), (1, every), (2, every)):
        serve = [
            sys.executable, "-m", "engine.cli", "serve", "--models", str(models),
            "--port", str(PORTS["ordersight"]), "--warm-from", str(head),
            "--workers", str(workers),
        ]  # fmt: skip
        name = f"{workers} front(s), server on CPUs {','.join(map(str, cpus))}"
        with server_process(serve, logs / "scaling.log", cpus=cpus) as proc:
            target = f"127.0.0.1:{PORTS['ordersight']}"
            wait_serving(target, proc)
            load = Load(target, SCORE, concurrency=64, duration_s=seconds, procs=2, cpus=(0,))
            cpu0 = cpu_by_process(proc.pid)
            r = run(load, requests)
            cpu1 = cpu_by_process(proc.pid)
        used = sum(c - cpu0.get(pid, (role, 0.0))[1] for pid, (role, c) in cpu1.items())
        row = {"setup": name, "workers": workers, "cpus": list(cpus), **r}
        row["server_cpu_us"] = used / max(r["completed"], 1) * 1e6
        log(f"  {name}: {r['calls_per_s']:,.0f}/s, server {row['server_cpu_us']:.0f} us/call")
        rows.append(row)
    return rows


def _mlserver(
    models: Path, X: np.ndarray, seconds: float, logs: Path, loads: list[dict[str, Any]], log: Any
) -> dict[str, Any]:
    python = mlserver.ensure_venv(ROOT)
    requests = mlserver.infer_requests(python, X[:5000], "tier2")
    target = f"127.0.0.1:{PORTS['mlserver']}"
    tried = []
    for workers, size, wait_s in mlserver.CONFIGS:
        repo = mlserver.write_model_repo(
            models / "tier2.lgb.txt",
            logs / f"mlserver-{workers}-{size}",
            parallel_workers=workers,
            max_batch_size=size,
            max_batch_time_s=wait_s,
            grpc_port=PORTS["mlserver"],
            http_port=PORTS["mlserver"] + 10,
            metrics_port=PORTS["mlserver"] + 20,
        )
        proc = mlserver.start(python, repo)
        try:
            r = run(
                Load(target, mlserver.INFER_METHOD, concurrency=64, duration_s=seconds, procs=2),
                requests,
            )
        finally:
            mlserver.stop(proc)
        config = {"parallel_workers": workers, "max_batch_size": size, "max_batch_time_s": wait_s}
        tried.append({**config, **r})
        log(f"  mlserver {config}: {r['calls_per_s']:,.0f}/s at c=64")
    best = mlserver.best_config(tried)
    repo = mlserver.write_model_repo(
        models / "tier2.lgb.txt",
        logs / "mlserver-best",
        parallel_workers=best["parallel_workers"],
        max_batch_size=best["max_batch_size"],
        max_batch_time_s=best["max_batch_time_s"],
        grpc_port=PORTS["mlserver"],
        http_port=PORTS["mlserver"] + 10,
        metrics_port=PORTS["mlserver"] + 20,
    )
    proc = mlserver.start(python, repo)
    try:
        # Its answers must be the model's before its speed means anything.
        mlserver.verify(python, target, models / "tier2.lgb.txt", X[:32], requests[:32])
        loads += sweep(
            "mlserver", target, mlserver.INFER_METHOD, requests, seconds, log, None, proc.pid
        )
    finally:
        mlserver.stop(proc)
    return {"tried": tried, "best": best}


def _point(results: dict[str, Any], target: str, concurrency: int) -> dict[str, Any] | None:
    for r in results.get("score", []):
        if r["target"] == target and r["concurrency"] == concurrency:
            return r
    return None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured figure and met / missed."""
    rows: list[dict[str, Any]] = []

    def add(name: str, figure: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "figure": figure, "goal": goal, "met": met})

    one = "ordersight-1w"
    # The echo ratios: medians of the paired rounds (`benchmarks.paired`).
    paired = results.get("paired", [])
    p64, p1 = paired_point(paired, one, 64), paired_point(paired, one, 1)
    if p64:
        ratio = p64["calls_per_s_ratio"]["median"]
        add("Score c=64, 1 worker, vs echo floor (calls/s ratio)", ratio, ">= 0.85", ratio >= 0.85)
        ratio = p64["server_cpu_ratio"]["median"]
        add("Server CPU per Score call c=64, 1 worker, vs echo", ratio, "<= 1.2", ratio <= 1.2)
    os64, ml64 = _point(results, one, 64), _point(results, "mlserver", 64)
    if os64 and ml64:
        ratio = os64["calls_per_s"] / ml64["calls_per_s"]
        add("Score c=64, 1 worker, vs MLServer best (calls/s ratio)", ratio, ">= 1.9", ratio >= 1.9)
    if p1:
        gap = p1["p99_minus_echo_ms"]["median"]
        add("Score c=1 p99 minus echo p99 (ms)", gap, "<= 0.3", gap <= 0.3)
    for r in results.get("bulk", []):
        if r["rpc"] == "ScoreBatch/arrow_ipc+arrow_response" and r["orders"] == max(batch.SIZES):
            v = r["orders_per_s"]
            add("ScoreBatch Arrow IPC in and out, 100k (orders/s)", v, ">= 400,000", v >= 400_000)
        if r["rpc"] == "ScoreBatch/orders" and r["orders"] == max(batch.SIZES):
            v = r["orders_per_s"]
            add("ScoreBatch repeated Order 100k (orders/s)", v, ">= 50,000", v >= 50_000)
        if r["rpc"] == "score-file":
            v = r["orders_per_s"]
            add("score-file replay (orders/s)", v, ">= 400,000", v >= 400_000)
    big = [s for s in results.get("stages", []) if s["batch"] == max(stages.BATCHES)]
    if big:
        v = 1e9 / big[0]["tier1"]
        add("Tier one alone, one core (orders/s)", v, ">= 5,000,000", v >= 5_000_000)
    return rows


if __name__ == "__main__":
    sys.exit(main())
