"""Two replicas behind no balancer but the client: Score throughput over both, and how far
behind each one's velocity state runs (the replication lag).

Starts a JetStream nats-server and two engines (one front process each, warmed alike) that
replicate through it, drives both at once with the load generator, then reads each
replica's lag histogram (from acceptance at the other replica to application here) and
waits until both have applied everything the other accepted.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Load, run
from benchmarks.servers import server_process, wait_serving
from tests.services import nats_server

SCORE = "/ordersight.v1.OrderRisk/Score"


def _metrics(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ordersight_replication") or line.startswith("ordersight_decisions"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _quantile(m: dict[str, float], q: float) -> float:
    """Upper bound of the bucket holding quantile q of the lag histogram."""
    prefix = "ordersight_replication_lag_seconds_bucket{le="
    buckets = sorted(
        (float(k[len(prefix) + 1 : -2]), v) for k, v in m.items() if k.startswith(prefix)
    )
    total = buckets[-1][1] if buckets else 0.0
    for le, count in buckets:
        if total and count >= q * total:
            return le
    return float("nan")


def replicated_load(
    serve: list[str],
    ports: tuple[int, int],
    requests: list[bytes],
    seconds: float,
    logs: Path,
) -> dict[str, Any]:
    """`serve`: the engine's command line without --port."""
    with (
        tempfile.TemporaryDirectory() as store,
        nats_server(Path(store)) as url,
        contextlib.ExitStack() as stack,
    ):
        metrics = []
        for name, port in zip("ab", ports, strict=True):
            env = {
                "ORDERSIGHT_REPLICATION_URL": url,
                "ORDERSIGHT_REPLICA_ID": name,
                "ORDERSIGHT_METRICS_PORT": str(port + 40),
            }
            cmd = [*serve, "--port", str(port), "--workers", "1"]
            proc = stack.enter_context(server_process(cmd, logs / f"replica-{name}.log", env))
            wait_serving(f"127.0.0.1:{port}", proc)
            metrics.append(f"http://127.0.0.1:{port + 40}/metrics")
        half = len(requests) // 2
        loads = [
            (Load(f"127.0.0.1:{p}", SCORE, concurrency=32, duration_s=seconds), reqs)
            for p, reqs in zip(ports, (requests[:half], requests[half:]), strict=True)
        ]
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda lr: run(*lr), loads))
        stopped = time.monotonic()
        # Converged: each replica has applied every message the other published.
        while True:
            m = [_metrics(u) for u in metrics]
            pub = [sum(v for k, v in x.items() if "published_total" in k) for x in m]
            got = [sum(v for k, v in x.items() if "applied_total" in k) for x in m]
            if got[0] >= pub[1] and got[1] >= pub[0]:
                break
            if time.monotonic() - stopped > 120:
                raise RuntimeError(f"replicas did not converge: published {pub}, applied {got}")
            time.sleep(0.01)
        converged_s = time.monotonic() - stopped
    lag = {
        f"replica_{name}": {
            "mean_ms": 1e3
            * x["ordersight_replication_lag_seconds_sum"]
            / max(x["ordersight_replication_lag_seconds_count"], 1),
            "p50_le_ms": 1e3 * _quantile(x, 0.5),
            "p99_le_ms": 1e3 * _quantile(x, 0.99),
            "messages": x["ordersight_replication_lag_seconds_count"],
        }
        for name, x in zip("ab", m, strict=True)
    }
    return {
        "calls_per_s": sum(r["calls_per_s"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "lag": lag,
        "converged_after_load_s": converged_s,
    }
