"""`make bench`: OrderSight against the gRPC floor, MLServer and the tree runtimes, in one run.

Starts three servers on 127.0.0.1 (OrderSight with its default models and a warmed velocity
state, a bare grpc.aio echo server, MLServer with mlserver-lightgbm serving the same tier-two
model), drives each with the same multi-process load generator, then measures ScoreBatch,
score-file, the in-process stages and the tier-two runtimes. Writes results.json,
results.md and latency_throughput.png to benchmarks/results/ and commits nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow.parquet as pq
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import batch, mlserver, replication, stages
from benchmarks.loadgen import Load, run
from engine.codec.history import read_history
from engine.codec.order_messages import orders_from_table
from engine.features import matrix as features
from engine.features.velocity import VelocityState

ROOT = Path(__file__).resolve().parent.parent
SCORE = "/ordersight.v1.OrderRisk/Score"
CONCURRENCY = (1, 16, 64, 256)
RATES = (500, 1000, 2000)
PORTS = {"ordersight": 50151, "echo": 50152, "mlserver": 50153}
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


def _wait_serving(target: str, proc: subprocess.Popen, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see its log")
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                if time.monotonic() > end:
                    raise
            if time.monotonic() > end:
                raise TimeoutError(f"{target} not serving after {deadline_s}s")


def _wait_port(target: str, deadline_s: float = 60.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=deadline_s)


@contextlib.contextmanager
def _process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cpus: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen]:
    """A server in its own session (its processes, fronts included, are one group), pinned
    to `cpus` when given (children inherit it)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _batch_stats(metrics_url: str | None) -> tuple[float, float]:
    """(sum, count) of the server's ordersight_batch_size histogram."""
    if metrics_url is None:
        return 0.0, 0.0
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ordersight_batch")
    )
    return float(values["ordersight_batch_size_sum"]), float(values["ordersight_batch_size_count"])


def _cpu_by_process(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system, all threads) of `root` and every process in its process
    group (the servers run in their own session: a front process is in its engine's)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == root or int(p.name) == root:  # field 5: process group
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                role = "front" if "engine.serving.front" in cmd else "engine"
                out[int(p.name)] = (role, (int(stat[11]) + int(stat[12])) / tick)
    return out


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
        s0, n0 = _batch_stats(metrics_url)
        cpu0 = _cpu_by_process(server_pid) if server_pid else {}
        r = {"target": name, **run(load, requests)}
        cpu1 = _cpu_by_process(server_pid) if server_pid else {}
        s1, n1 = _batch_stats(metrics_url)
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

    results: dict[str, Any] = {"machine": machine(), "command": "make bench"}
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
        with _process(serve, logs / f"{name}.log", env) as proc:
            target = f"127.0.0.1:{PORTS['ordersight']}"
            _wait_serving(target, proc)
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
    results["replication"] = replication.replicated_load(
        serve, ports, requests, args.seconds, logs, _process, _wait_serving
    )
    rep = results["replication"]
    log(
        f"  {rep['calls_per_s']:,.0f} calls/s over both, p99 {rep['p99_ms']:.2f} ms; lag "
        + ", ".join(f"{k} mean {v['mean_ms']:.2f} ms" for k, v in rep["lag"].items())
    )
    echo = [py, "-m", "benchmarks.echo_server", "--port", str(PORTS["echo"])]
    with _process(echo, logs / "echo.log") as proc:
        target = f"127.0.0.1:{PORTS['echo']}"
        _wait_port(target)
        loads += sweep("echo", target, SCORE, requests, args.seconds, log, None, proc.pid)
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
        with _process(serve, logs / "scaling.log", cpus=cpus) as proc:
            target = f"127.0.0.1:{PORTS['ordersight']}"
            _wait_serving(target, proc)
            load = Load(target, SCORE, concurrency=64, duration_s=seconds, procs=2, cpus=(0,))
            cpu0 = _cpu_by_process(proc.pid)
            r = run(load, requests)
            cpu1 = _cpu_by_process(proc.pid)
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
    os64, echo64, ml64 = (_point(results, t, 64) for t in (one, "echo", "mlserver"))
    os1, echo1 = _point(results, one, 1), _point(results, "echo", 1)
    if os64 and echo64:
        ratio = os64["calls_per_s"] / echo64["calls_per_s"]
        add("Score c=64, 1 worker, vs echo floor (calls/s ratio)", ratio, ">= 0.85", ratio >= 0.85)
        if "server_cpu_us" in os64 and "server_cpu_us" in echo64:
            ratio = os64["server_cpu_us"] / echo64["server_cpu_us"]
            add("Server CPU per Score call c=64, 1 worker, vs echo", ratio, "<= 1.2", ratio <= 1.2)
    if os64 and ml64:
        ratio = os64["calls_per_s"] / ml64["calls_per_s"]
        add("Score c=64, 1 worker, vs MLServer best (calls/s ratio)", ratio, ">= 1.9", ratio >= 1.9)
    if os1 and echo1:
        gap = os1["p99_ms"] - echo1["p99_ms"]
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


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# OrderSight benchmarks",
        "",
        f"Command: `{results['command']}` on {m['date']}. Machine: {m['cpu']}, {m['cores']} "
        f"cores, Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "",
        "Load generator and servers share this machine's cores: the generator's own CPU use "
        "is in its own column. Server CPU per call: user + system time of every process of "
        "the server (engine and front processes) over the load point, divided by the calls "
        "answered. ordersight-Nw: N gRPC front processes before the one engine process. The "
        f"servers are warmed with the history but its last {TAIL:,} orders, which are the "
        "calls sent.",
        "",
        "## Targets",
        "",
        "| target | figure | goal | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        fig = t["figure"]
        shown = f"{fig:,.0f}" if fig is not None and abs(fig) >= 1000 else f"{fig:.3f}"
        lines.append(f"| {t['target']} | {shown} | {t['goal']} | {'yes' if t['met'] else 'no'} |")
    lines += [
        "",
        "## Score over gRPC",
        "",
        "| server | concurrency | rate | calls/s | p50 ms | p95 ms | p99 ms | p99.9 ms "
        "| client cores | server CPU µs/call (engine + fronts) | calls per micro-batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["score"]:
        cpu = ""
        if "server_cpu_us" in r:
            roles = r["server_cpu_us_by_role"]
            cpu = f"{r['server_cpu_us']:,.0f}"
            if "front" in roles:
                cpu += f" ({roles.get('engine', 0):,.0f} + {roles['front']:,.0f})"
        lines.append(
            f"| {r['target']} | {r['concurrency'] or ''} | {r['rate'] or ''} | "
            f"{r['calls_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['client_cpu_cores']:.2f} | {cpu} | "
            + (f"{r['mean_batch']:.2f} |" if "mean_batch" in r else " |")
        )
    if "mlserver" in results:
        lines += ["", "MLServer configurations tried at concurrency 64 (best used above):", ""]
        for t in results["mlserver"]["tried"]:
            lines.append(
                f"- parallel_workers={t['parallel_workers']}, max_batch_size="
                f"{t['max_batch_size']}, max_batch_time={t['max_batch_time_s']}s: "
                f"{t['calls_per_s']:,.0f} calls/s, p99 {t['p99_ms']:.2f} ms"
            )
    if results.get("scaling"):
        lines += [
            "",
            "## Scaling: load generator pinned to CPU 0, concurrency 64",
            "",
            "| server | calls/s | p99 ms | server CPU µs/call | client cores |",
            "|---|---|---|---|---|",
        ]
        for r in results["scaling"]:
            lines.append(
                f"| {r['setup']} | {r['calls_per_s']:,.0f} | {r['p99_ms']:.2f} | "
                f"{r['server_cpu_us']:,.0f} | {r['client_cpu_cores']:.2f} |"
            )
    rep = results.get("replication")
    if rep:
        lines += [
            "",
            "## Two replicas over NATS JetStream",
            "",
            f"Both replicas (one front process each) driven at once, concurrency 32 each: "
            f"{rep['calls_per_s']:,.0f} calls/s in all, p99 {rep['p99_ms']:.2f} ms, "
            f"{rep['errors']} errors; both states held every order the other accepted "
            f"{rep['converged_after_load_s'] * 1e3:,.0f} ms after the load stopped.",
            "",
            "| replica | messages applied | mean lag ms | p50 lag ms (bucket bound) "
            "| p99 lag ms (bucket bound) |",
            "|---|---|---|---|---|",
        ]
        for name, v in rep["lag"].items():
            lines.append(
                f"| {name} | {v['messages']:,.0f} | {v['mean_ms']:.2f} | {v['p50_le_ms']:.0f} "
                f"| {v['p99_le_ms']:.0f} |"
            )
    lines += ["", "## Bulk", "", "| path | orders | orders/s |", "|---|---|---|"]
    for r in results["bulk"]:
        lines.append(f"| {r['rpc']} | {r['orders']:,} | {r['orders_per_s']:,.0f} |")
    sf = [r for r in results["bulk"] if "first_call_seconds" in r]
    if sf:
        lines += [
            "",
            f"ScoreBatch: best of 3 calls, client-side wall time. score-file: the second call in a "
            f"fresh process ({sf[0]['seconds']:.2f} s); the first, which also loads the models and "
            f"Numba's cached kernels, took {sf[0]['first_call_seconds']:.2f} s.",
        ]
    lines += ["", "## In-process stages (ns per order)", ""]
    cols = [k for k in results["stages"][0] if k != "batch"]
    lines += ["| batch | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in results["stages"]:
        lines.append(f"| {s['batch']} | " + " | ".join(f"{s[c]:,.0f}" for c in cols) + " |")
    rt = results["tier2_runtimes"]
    names = [k for k in rt[1] if k != "batch"]
    lines += [
        "",
        "## Tier two runtimes, same model, one thread (ns per row)",
        "",
        "| batch | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for r in rt[1:]:
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r[n]:,.0f}" for n in names) + " |")
    lines += [
        "",
        "Largest difference from LightGBM's own predictions: "
        + ", ".join(f"{k} {v:.1e}" for k, v in rt[0]["max_abs_diff_vs_lightgbm"].items()),
    ]
    lines += [
        "",
        "## Reason codes: TreeSHAP per row (µs)",
        "",
        "| batch | engine tables | LightGBM pred_contrib |",
        "|---|---|---|",
    ]
    for r in results.get("explain_runtimes", []):
        lines.append(
            f"| {r['batch']} | {r['engine_treeshap_us']:,.1f} | "
            f"{r['lightgbm_pred_contrib_us']:,.1f} |"
        )
    if results.get("explain_runtimes"):
        diff = results["explain_runtimes"][0]["max_abs_diff"]
        lines += ["", f"Largest difference between the two: {diff:.1e}"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p99 against calls/s: closed loop as lines (concurrency 1 to 256), open loop
    (fixed rates) as separate markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, q in zip(axes, ("p50", "p99"), strict=True):
        for target in sorted({r["target"] for r in results["score"]}):
            closed = [r for r in results["score"] if r["target"] == target and r["concurrency"]]
            opened = [r for r in results["score"] if r["target"] == target and r["rate"]]
            if not closed:
                continue
            closed.sort(key=lambda r: r["concurrency"])
            line = ax.plot(
                [r["calls_per_s"] for r in closed],
                [r[f"{q}_ms"] for r in closed],
                "o-",
                label=f"{target}, closed loop (c=1..256)",
            )[0]
            ax.plot(
                [r["calls_per_s"] for r in opened],
                [r[f"{q}_ms"] for r in opened],
                "x",
                ms=9,
                color=line.get_color(),
                label=f"{target}, open loop",
            )
        ax.set(xlabel="calls/s", ylabel=f"{q} latency (ms)", yscale="log", title=f"Score: {q}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
