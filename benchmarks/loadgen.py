"""Multi-process gRPC load generator: closed loop (fixed concurrency) or open loop (fixed rate).

Requests are pre-serialised bytes sent through a raw unary method, so the client spends no
time on protobuf and the same code drives any server (OrderSight, the echo floor, MLServer's
V2 inference protocol). Each worker process runs a grpc.aio channel; latencies are measured
per call with a monotonic clock; in open loop from the call's *scheduled* start, so a slow
server cannot hide its queueing (no coordinated omission). Every result carries the
generator's own CPU use, to show it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

WARMUP_S = 1.0


@dataclass(frozen=True)
class Load:
    target: str  # host:port
    method: str  # e.g. /ordersight.v1.OrderRisk/Score
    concurrency: int = 1  # closed loop: calls in flight
    rate: float = 0.0  # open loop: calls per second (0 = closed loop)
    duration_s: float = 5.0
    procs: int = 1
    timeout_s: float = 5.0
    cpus: tuple[int, ...] = ()  # pin the generator's processes to these CPUs (() = any)
    metadata: tuple[tuple[str, str], ...] = ()  # sent with every call (a bearer token)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _worker(load: Load, share: float, requests: list[bytes], seed: int) -> dict[str, Any]:
    options = [("grpc.so_reuseport", 0), ("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(load.target, options=options) as channel:
        call = channel.unary_unary(load.method)
        md = load.metadata or None
        await call(requests[0], timeout=30, metadata=md)  # connect before the clock starts
        lat: list[int] = []
        errors = 0
        completed = 0  # every call answered, warm-up included (for CPU per call)
        start = time.perf_counter()
        warm_until = start + WARMUP_S
        end = warm_until + load.duration_s
        counter = seed

        async def one(scheduled: float) -> None:
            nonlocal errors, counter, completed
            req = requests[counter % len(requests)]
            counter += 1
            try:
                await call(req, timeout=load.timeout_s, metadata=md)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            done = time.perf_counter()
            completed += 1
            if scheduled >= warm_until and done <= end:
                lat.append(int((done - scheduled) * 1e9))

        cpu0 = 0.0
        if load.rate <= 0:
            n = max(int(round(load.concurrency * share)), 1)

            async def loop() -> None:
                while time.perf_counter() < end:
                    await one(time.perf_counter())

            async def mark_cpu() -> None:
                nonlocal cpu0
                await asyncio.sleep(WARMUP_S)
                cpu0 = _cpu_s()

            await asyncio.gather(mark_cpu(), *(loop() for _ in range(n)))
        else:
            rate = load.rate * share
            pending: set[asyncio.Task] = set()
            k = 0
            marked = False
            while True:
                scheduled = start + k / rate
                if scheduled >= end:
                    break
                if not marked and scheduled >= warm_until:
                    cpu0, marked = _cpu_s(), True
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = asyncio.ensure_future(one(scheduled))
                pending.add(t)
                t.add_done_callback(pending.discard)
                k += 1
            if pending:
                await asyncio.wait(pending, timeout=load.timeout_s + 1)
        cpu = _cpu_s() - cpu0
        return {"lat_ns": lat, "errors": errors, "cpu_s": cpu, "completed": completed}


def _run_worker(load: Load, share: float, requests: list[bytes], seed: int, q: Any) -> None:
    if load.cpus:
        os.sched_setaffinity(0, load.cpus)
    try:
        q.put(asyncio.run(_worker(load, share, requests, seed)))
    except Exception as exc:  # reported by the parent, which would otherwise wait
        q.put({"failed": f"{type(exc).__name__}: {exc}"})


def run(load: Load, requests: list[bytes]) -> dict[str, Any]:
    """Run the load; return calls/s, latency percentiles (ms) and the generator's CPU use."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    share = 1.0 / load.procs
    procs = [
        ctx.Process(target=_run_worker, args=(load, share, requests, i * 7919, q))
        for i in range(load.procs)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=load.duration_s + WARMUP_S + 120) for _ in procs]
    for p in procs:
        p.join()
    failed = [r["failed"] for r in results if "failed" in r]
    if failed:
        raise RuntimeError(f"load generator failed against {load.target}: {failed[0]}")
    lat = np.concatenate([np.asarray(r["lat_ns"], dtype=np.int64) for r in results]) / 1e6
    cpu = sum(r["cpu_s"] for r in results)
    out: dict[str, Any] = {
        "concurrency": load.concurrency if load.rate <= 0 else None,
        "rate": load.rate or None,
        "calls": int(lat.size),
        "calls_per_s": lat.size / load.duration_s,
        "errors": int(sum(r["errors"] for r in results)),
        "completed": int(sum(r["completed"] for r in results)),
        "client_procs": load.procs,
        "client_cpu_cores": cpu / load.duration_s,
    }
    for q_name, q_val in (("p50", 50), ("p95", 95), ("p99", 99), ("p999", 99.9)):
        out[f"{q_name}_ms"] = float(np.percentile(lat, q_val)) if lat.size else float("nan")
    return out
