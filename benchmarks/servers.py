"""The benchmark's servers as processes: start one in its own session (pinned to CPUs if
asked), wait until it serves, read its batch-size histogram and its processes' CPU time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def wait_serving(target: str, proc: subprocess.Popen, deadline_s: float = 120.0) -> None:
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


def wait_port(target: str, deadline_s: float = 60.0) -> None:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=deadline_s)


NO_RETRY_TABLE = {"ORDERSIGHT_IDEMPOTENCY_WINDOW_S": "0"}
"""The load generators send the same held-out orders over and over: with the retry table
(`engine.serving.retries`) OrderSight would answer every repeat from it without scoring,
and the benchmark would measure a cache."""


@contextlib.contextmanager
def server_process(
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
            env={**os.environ, **NO_RETRY_TABLE, **(env or {})},
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


def batch_stats(metrics_url: str | None) -> tuple[float, float]:
    """(sum, count) of the server's ordersight_batch_size histogram."""
    if metrics_url is None:
        return 0.0, 0.0
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("ordersight_batch")
    )
    return float(values["ordersight_batch_size_sum"]), float(values["ordersight_batch_size_count"])


def cpu_by_process(root: int) -> dict[int, tuple[str, float]]:
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
