"""Open-loop overload: OrderSight offered more Score calls than it can answer.

Starts the engine as `make bench` does (`benchmarks.servers`: its default models, warmed with
the history but its last orders, the retry table off). The generator and the server each get
half the CPUs (`Layout.pinned`; on two cores one each, one generator process and one front
process), so that neither takes the other's cores when the server is overloaded: the
generator costs about as much CPU per call as the server, and sharing cores, an overloaded
server would slow the generator and the generator's backlog would pass for the server's
(`--shared` runs both on every CPU, the engine with its default fronts, to see that).

It measures the server's capacity, the most Score calls/s it answers in closed loop at
concurrency 64 (as the paired rounds drive it; best of three short runs), then offers it
1.5x and 3x that in open loop: Poisson arrivals, each call issued at its scheduled time
whatever the earlier calls' fate, each with a 1 s deadline. The calls are the held-out
orders, each under an order id of its own.

Per offered rate: the calls scheduled, issued and answered per second; the accepted (OK)
calls' latency percentiles, from issue to answer and inside the engine (the answers' own
`latency_us`, from the engine taking the call to its answer); the refused
(RESOURCE_EXHAUSTED) calls' count and how fast the refusal came; every gRPC status's count;
the engine's own `ordersight_rejected_total` by reason (queue_full: the engine's queue
bound; deadline: a call that reached the engine past its deadline and was not scored; a
RESOURCE_EXHAUSTED the engine did not count came from a front's `max_in_flight`); the
server's and the generator's CPU.

The bound: the engine admits a Score call only while fewer calls wait for it (queued, or in a
micro-batch not yet scored) than it scores in `max_queue_ms` at its recent pace
(`DataPlane.queue_limit`). So an accepted call waits about `max_queue_ms` at most for the
engine, its own micro-batch included; what remains is the way in through a front, the hop
back and the answer's way to the client, a few service times, for which the bound allows
`SLACK_MS`. An offered rate passes when its accepted p99 is within `BOUND_MS`
(`max_queue_ms` + `SLACK_MS`) and no call ended CANCELLED (the generator never cancels a
call, so a CANCELLED comes from the server).

The generator may still not keep up (at three times the capacity it needs about a core of
its own). Each call records how late it was issued (schedule lag: issue time minus
scheduled time); a call that could not be issued within its deadline of its scheduled time is
not sent and counted as skipped. The lag shows how far the generator itself fell behind (a
generator that is behind also takes its answers late, which adds to the latencies from
issue), and each row says whether it kept up (lag p99 within `LAG_OK_MS`, nothing skipped).
Writes overload.json and overload.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import urllib.request
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
from ordersight.v1 import risk_pb2 as pb

from benchmarks.servers import cpu_by_process, server_process, wait_serving

ROOT = Path(__file__).resolve().parent.parent
SCORE = "/ordersight.v1.OrderRisk/Score"
MULTIPLES = (1.5, 3.0)  # offered rates, as multiples of the measured capacity
SECONDS = 25.0  # per offered rate, after WARMUP_S
WARMUP_S = 2.0  # the first seconds of each run, left out of its figures
DEADLINE_S = 1.0
CAPACITY_RUNS, CAPACITY_SECONDS, CAPACITY_CONCURRENCY = 3, 4.0, 64
COOL_DOWN_S = 5.0  # between two runs, for the calls of the last one to drain
PROCS = 2  # generator processes
MAX_QUEUE_MS = 50.0  # the engine's default `max_queue_ms`, which the servers here run with
SLACK_MS = 50.0
BOUND_MS = MAX_QUEUE_MS + SLACK_MS
LAG_OK_MS = 10.0  # schedule lag p99 under which the generator kept up (a tenth of BOUND_MS)
GC_THRESHOLD = 20_000  # the generator's young-generation collection threshold
SKIPPED = 255  # status recorded for a call never issued (too late by its deadline)
STATUS = {s.value[0]: s.name for s in grpc.StatusCode}
STATUS[SKIPPED] = "SKIPPED"
REPORTED = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED")
SLEEP_MIN_S = 0.0005  # an arrival due sooner is issued at once rather than slept for
YIELD_EVERY = 64  # calls issued back to back before the generator lets answers in


class Source(Protocol):
    """The calls a generator sends: the k-th call's method (an index into `Offer.methods`)
    and request bytes. Picklable (it goes to each generator process); every k is used once
    over all processes."""

    def method(self, k: int) -> int: ...

    def request(self, k: int) -> tuple[int, bytes]: ...


def with_order_id(order: bytes, order_id: str) -> bytes:
    """A serialized Order under another order_id: its field 1, which protobuf serializes
    first, dropped, and the new one put in its place."""
    if order[:1] == b"\x0a":
        n, at = _varint(order, 1)
        order = order[at + n :]
    new = order_id.encode()
    return b"\x0a" + _varint_bytes(len(new)) + new + order


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, at
        shift += 7


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True)
class HeldOutOrders:
    """Score calls of `orders` (serialized Orders) in turn, the k-th under order id
    `{prefix}{k}`, so that no two calls share an id."""

    orders: Sequence[bytes]
    prefix: str

    def method(self, k: int) -> int:
        return 0

    def request(self, k: int) -> tuple[int, bytes]:
        return 0, with_order_id(self.orders[k % len(self.orders)], f"{self.prefix}{k}")


@dataclass(frozen=True)
class Offer:
    """A load: open loop at `rate` calls/s over all processes (Poisson arrivals), or, with
    `rate` 0, closed loop with `concurrency` calls in flight. Runs `warmup_s` and then
    `duration_s`; each call has a deadline of `deadline_s` from its issue."""

    target: str
    methods: tuple[str, ...] = (SCORE,)
    rate: float = 0.0
    concurrency: int = 0
    duration_s: float = SECONDS
    warmup_s: float = WARMUP_S
    procs: int = PROCS
    deadline_s: float = DEADLINE_S
    seed: int = 0
    cpus: tuple[int, ...] = ()  # the generator's processes run on these CPUs (() = any)


@dataclass
class Calls:
    """Every call of a run, one entry each: scheduled time (s after the run's start), schedule
    lag and latency from issue (s; NaN for a skipped call), the time the engine says it
    spent on the call (a Score answer's `latency_us`, from the engine taking the call to its
    answer; NaN for other calls), gRPC status number (SKIPPED for a call never sent),
    method index; the generator's CPU seconds, its start (monotonic seconds, the clock the
    engine's deadlines use) and the first message of each error status."""

    sched: np.ndarray
    lag: np.ndarray
    latency: np.ndarray
    engine: np.ndarray
    code: np.ndarray
    method: np.ndarray
    cpu_s: float
    start: float
    details: dict[str, str]


async def _drive(offer: Offer, source: Source, index: int, barriers: Any, start: Any) -> dict:
    options = [("grpc.so_reuseport", 0), ("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(offer.target, options=options) as channel:
        stubs = [channel.unary_unary(m) for m in offer.methods]
        await asyncio.wait_for(channel.channel_ready(), 60)
        barriers[0].wait()  # every generator connected: the parent sets the start
        barriers[1].wait()
        t0 = start.value
        sched, lag, latency, engine = array("d"), array("d"), array("d"), array("d")
        code, method = array("B"), array("B")
        details: dict[int, str] = {}  # the first message of each error status
        scores = {i for i, name in enumerate(offer.methods) if name == SCORE}
        deadline = offer.deadline_s

        def skip(k: int, at: float) -> None:
            sched.append(at - t0)
            lag.append(float("nan"))
            latency.append(float("nan"))
            engine.append(float("nan"))
            code.append(SKIPPED)
            method.append(source.method(k))

        async def one(k: int, at: float) -> None:
            m, body = source.request(k)
            issued = time.monotonic()
            if issued - at > deadline:
                skip(k, at)
                return
            status, inside = 0, float("nan")
            try:
                answer = await stubs[m](body, timeout=deadline)
                if m in scores:
                    inside = pb.Decision.FromString(answer).latency_us * 1e-6
            except grpc.aio.AioRpcError as exc:
                status = exc.code().value[0]
                details.setdefault(status, exc.details() or "")
            done = time.monotonic()
            sched.append(at - t0)
            lag.append(issued - at)
            latency.append(done - issued)
            engine.append(inside)
            code.append(status)
            method.append(m)

        # Thousands of calls in flight make the collector's default young-generation passes
        # stall the loop: what was allocated before the start is frozen and passes are rarer.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 50, 1000)
        end = t0 + offer.warmup_s + offer.duration_s
        await asyncio.sleep(max(t0 - time.monotonic(), 0.0))
        cpu0 = time.process_time()
        if offer.rate > 0:
            await _open_loop(offer, index, t0, end, one, skip)
        else:
            await _closed_loop(offer, index, end, one)
        return {
            "sched": np.frombuffer(sched), "lag": np.frombuffer(lag),
            "latency": np.frombuffer(latency), "engine": np.frombuffer(engine),
            "code": np.frombuffer(code, np.uint8), "method": np.frombuffer(method, np.uint8),
            "cpu_s": time.process_time() - cpu0, "details": details,
        }  # fmt: skip


async def _open_loop(offer: Offer, index: int, t0: float, end: float, one: Any, skip: Any) -> None:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(offer.seed * 1009 + index)
    mean_gap = offer.procs / offer.rate
    gaps: list[float] = []
    tasks: set[asyncio.Task] = set()
    at, k, back_to_back = t0, index, 0
    while True:
        if not gaps:
            gaps = rng.exponential(mean_gap, 4096).tolist()
        at += gaps.pop()
        if at >= end:
            break
        delay = at - time.monotonic()
        if delay > SLEEP_MIN_S:
            await asyncio.sleep(delay)
            back_to_back = 0
        elif -delay > offer.deadline_s:
            skip(k, at)
            k += offer.procs
            continue
        task = loop.create_task(one(k, at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += offer.procs
        back_to_back += 1
        if back_to_back >= YIELD_EVERY:
            await asyncio.sleep(0)
            back_to_back = 0
    if tasks:
        await asyncio.wait(tasks)


async def _closed_loop(offer: Offer, index: int, end: float, one: Any) -> None:
    per_proc = max(offer.concurrency // offer.procs, 1)
    counter = iter(range(index, 1 << 62, offer.procs))

    async def caller() -> None:
        while (now := time.monotonic()) < end:
            await one(next(counter), now)

    await asyncio.gather(*(caller() for _ in range(per_proc)))


def _child(offer: Offer, source: Source, index: int, barriers: Any, start: Any, q: Any) -> None:
    if offer.cpus:
        os.sched_setaffinity(0, offer.cpus)
    try:
        q.put(asyncio.run(_drive(offer, source, index, barriers, start)))
    except Exception as exc:  # reported by the parent, which would otherwise wait
        for b in barriers:
            b.abort()
        q.put({"failed": f"{type(exc).__name__}: {exc}"})


class Running:
    """A load under way in its generator processes (`start`); `join` waits for its calls."""

    def __init__(self, offer: Offer, source: Source) -> None:
        ctx = mp.get_context("spawn")
        self.offer = offer
        self._q = ctx.Queue()
        barriers = (ctx.Barrier(offer.procs + 1, timeout=120), ctx.Barrier(offer.procs + 1))
        start = ctx.Value("d", 0.0)
        self._procs = [
            ctx.Process(target=_child, args=(offer, source, i, barriers, start, self._q))
            for i in range(offer.procs)
        ]
        for p in self._procs:
            p.start()
        try:
            barriers[0].wait()
        except Exception:
            self.join()  # raises the generator's own failure
            raise
        start.value = self.start = time.monotonic() + 0.2
        barriers[1].wait()

    def join(self) -> Calls:
        wait = self.offer.warmup_s + self.offer.duration_s + self.offer.deadline_s + 120
        results = [self._q.get(timeout=wait) for _ in self._procs]
        for p in self._procs:
            p.join()
        failed = [r["failed"] for r in results if "failed" in r]
        if failed:
            raise RuntimeError(f"load generator failed against {self.offer.target}: {failed[0]}")
        arrays = ("sched", "lag", "latency", "engine", "code", "method")
        cat = {k: np.concatenate([r[k] for r in results]) for k in arrays}
        details = {STATUS.get(c, str(c)): d for r in results for c, d in r["details"].items()}
        return Calls(
            **cat, cpu_s=sum(r["cpu_s"] for r in results), start=self.start, details=details
        )


def drive(offer: Offer, source: Source) -> Calls:
    return Running(offer, source).join()


def percentiles(values: np.ndarray, qs: Sequence[float] = (50, 99, 99.9)) -> dict[str, float]:
    """Percentiles of `values` (seconds) in ms, keyed p50, p99, p99.9 (NaN when empty)."""
    if not values.size:
        return {f"p{q:g}": float("nan") for q in qs}
    got = np.percentile(values, qs) * 1e3
    return {f"p{q:g}": float(v) for q, v in zip(qs, got, strict=True)}


def statuses(code: np.ndarray) -> dict[str, int]:
    """Count of each status, the reported ones always present, the rest under their names."""
    counts = {name: 0 for name in REPORTED}
    values, n = np.unique(code, return_counts=True)
    for v, c in zip(values.tolist(), n.tolist(), strict=True):
        counts[STATUS.get(v, str(v))] = c
    return counts


def summary(calls: Calls, offer: Offer, method: int = 0) -> dict[str, Any]:
    """The run's figures after its warm-up, for the calls of `method`."""
    keep = (calls.sched >= offer.warmup_s) & (calls.method == method)
    sched, code = calls.sched[keep], calls.code[keep]
    lag, latency, engine = calls.lag[keep], calls.latency[keep], calls.engine[keep]
    issued = code != SKIPPED
    ok = code == 0
    refused = code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    seconds = offer.duration_s
    run_s = offer.warmup_s + offer.duration_s
    second = np.floor(sched[ok] - offer.warmup_s).astype(np.int64)
    per_s = np.bincount(second, minlength=int(seconds))[: int(seconds)]
    return {
        "offered_per_s": offer.rate or None,
        "concurrency": offer.concurrency or None,
        "seconds": seconds,
        "scheduled_per_s": sched.size / seconds,
        "issued_per_s": int(issued.sum()) / seconds,
        "accepted_per_s": int(ok.sum()) / seconds,
        "accepted_ms": percentiles(latency[ok]),
        "accepted_from_schedule_ms": percentiles((lag + latency)[ok]),
        "accepted_in_engine_ms": percentiles(engine[ok]),
        "rejected": int(refused.sum()),
        "rejected_ms": percentiles(latency[refused], (50, 99)),
        "statuses": statuses(code),
        "skipped": int((~issued).sum()),
        "schedule_lag_ms": {
            **percentiles(lag[issued]),
            "max": float(np.max(lag[issued]) * 1e3) if issued.any() else float("nan"),
        },
        "client_cpu_cores": calls.cpu_s / run_s,
        "details": calls.details,
        "accepted_by_second": per_s.tolist(),
    }


def rejected_counts(metrics_url: str) -> dict[str, float]:
    """The engine's `ordersight_rejected_total`, by reason."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out = {}
    prefix = 'ordersight_rejected_total{reason="'
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name[len(prefix) : -2]] = float(value)
    return out


def server_cores(
    before: dict[int, tuple[str, float]], pid: int, seconds: float
) -> dict[str, float]:
    """CPU cores the server's processes used since `before` (`cpu_by_process`), by role
    (engine, front) and in all."""
    by_role: dict[str, float] = {}
    for p, (role, c) in cpu_by_process(pid).items():
        by_role[role] = by_role.get(role, 0.0) + (c - before.get(p, (role, 0.0))[1]) / seconds
    return {**by_role, "all": sum(by_role.values())}


def revision() -> dict[str, Any]:
    """The commit the engine runs from and whether engine/ differs from it ({} without git)."""

    def git(*args: str) -> str:
        got = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        )
        return got.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "engine_dirty": bool(git("status", "--porcelain", "--", "engine")),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def describe_revision(rev: dict[str, Any]) -> str:
    if not rev.get("commit"):
        return ""
    dirty = {True: " with uncommitted changes in engine/", None: " (engine/ not checked)"}.get(
        rev.get("engine_dirty"), ""
    )
    return f" Engine at commit {rev['commit'][:10]}{dirty}."


def split_cpus() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the generator's CPUs, the server's): the first half of the CPUs this process may run
    on and the rest, so that neither takes the other's cores; ((), ()) on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return (), ()
    half = len(cpus) // 2
    return tuple(cpus[:half]), tuple(cpus[half:])


@dataclass(frozen=True)
class Layout:
    """Where the generator and the server run: `procs` generator processes on `client_cpus`,
    the server on `server_cpus` with `workers` front processes (() = any CPU; 0 workers =
    the engine's default, one per core)."""

    client_cpus: tuple[int, ...]
    server_cpus: tuple[int, ...]
    procs: int
    workers: int

    @staticmethod
    def pinned() -> Layout:
        """Half the CPUs each, one generator process and one front per CPU."""
        client, server = split_cpus()
        if not client:
            return Layout.shared()
        return Layout(client, server, procs=len(client), workers=len(server))

    @staticmethod
    def shared() -> Layout:
        """Every CPU for both, two generator processes, the engine's default fronts."""
        return Layout((), (), procs=PROCS, workers=0)


def capacity(
    target: str, sources: Callable[[int], Source], pid: int, layout: Layout, log: Any
) -> dict[str, Any]:
    """Closed-loop Score calls/s at concurrency 64: the best of CAPACITY_RUNS runs, run r
    sending the calls of `sources(r)` (each run's order ids its own)."""
    runs = []
    for r in range(CAPACITY_RUNS):
        source = sources(r)
        offer = Offer(
            target, concurrency=CAPACITY_CONCURRENCY, duration_s=CAPACITY_SECONDS,
            warmup_s=1.0, deadline_s=5.0, seed=r, procs=layout.procs, cpus=layout.client_cpus,
        )  # fmt: skip
        cpu0 = cpu_by_process(pid)
        got = summary(drive(offer, source), offer)
        got["server_cpu_cores"] = server_cores(cpu0, pid, offer.warmup_s + offer.duration_s)
        runs.append(got)
        log(
            f"  capacity run {r + 1}: {got['accepted_per_s']:,.0f} calls/s, p99 "
            f"{got['accepted_ms']['p99']:.1f} ms, statuses {got['statuses']}"
        )
    best = max(runs, key=lambda g: g["accepted_per_s"])
    return {"calls_per_s": best["accepted_per_s"], "runs": runs}


def overload_point(offer: Offer, source: Source, pid: int, metrics_url: str) -> dict[str, Any]:
    """One open-loop run, with the engine's rejection counts and CPU over it, and the
    checks: accepted p99 within BOUND_MS, nothing CANCELLED (both decide `passed`), the
    generator kept up (says whether the row measures the server)."""
    before = rejected_counts(metrics_url)
    cpu0 = cpu_by_process(pid)
    calls = drive(offer, source)
    row = summary(calls, offer)
    row["server_cpu_cores"] = server_cores(cpu0, pid, offer.warmup_s + offer.duration_s)
    after = rejected_counts(metrics_url)
    row["engine_rejected"] = {k: v - before.get(k, 0.0) for k, v in after.items()}
    p99 = row["accepted_ms"]["p99"]
    lag = row["schedule_lag_ms"]["p99"]
    row["checks"] = {
        "accepted_p99_within_bound": bool(p99 <= BOUND_MS),
        "nothing_cancelled": row["statuses"]["CANCELLED"] == 0,
        "generator_kept_up": bool(lag <= LAG_OK_MS and row["skipped"] == 0),
    }
    row["passed"] = (
        row["checks"]["accepted_p99_within_bound"] and row["checks"]["nothing_cancelled"]
    )
    return row


def serve_command(models: Path, head: Path, port: int, workers: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "engine.cli", "serve", "--models", str(models),
        "--port", str(port), "--warm-from", str(head),
    ]  # fmt: skip
    return cmd + (["--workers", str(workers)] if workers else [])


def measure(
    models: Path,
    head: Path,
    requests: list[bytes],
    logs: Path,
    log: Any,
    port: int,
    layout: Layout | None = None,
    multiples: Sequence[float] = MULTIPLES,
) -> dict[str, Any]:
    """Capacity, then each multiple of it offered in open loop, against one engine started
    here, placed by `layout` (default `Layout.pinned`)."""
    layout = layout or Layout.pinned()
    rev = revision()
    metrics_port = port + 30
    env = {"ORDERSIGHT_METRICS_PORT": str(metrics_port)}
    cmd = serve_command(models, head, port, layout.workers)
    target, metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    log_path = logs / "overload-server.log"
    with server_process(cmd, log_path, env, cpus=layout.server_cpus) as proc:
        wait_serving(target, proc)
        cap = capacity(target, lambda r: HeldOutOrders(requests, f"cap{r}-"), proc.pid, layout, log)
        rows = []
        for i, m in enumerate(multiples):
            time.sleep(COOL_DOWN_S)
            offer = Offer(
                target, rate=m * cap["calls_per_s"], seed=i, procs=layout.procs,
                cpus=layout.client_cpus,
            )  # fmt: skip
            source = HeldOutOrders(requests, f"ov{i}-")
            row = {"multiple": m, **overload_point(offer, source, proc.pid, metrics_url)}
            rows.append(row)
            log("  " + _line(row))
    return {
        "command": "make bench (benchmarks/run.py calls benchmarks.overload)",
        "revision": rev,
        "layout": {
            "client_cpus": list(layout.client_cpus),
            "server_cpus": list(layout.server_cpus),
            "generator_procs": layout.procs,
            "workers": layout.workers or os.cpu_count(),
        },  # fmt: skip
        "deadline_s": DEADLINE_S,
        "seconds": SECONDS,
        "warmup_s": WARMUP_S,
        "bound_ms": BOUND_MS,
        "max_queue_ms": MAX_QUEUE_MS,
        "lag_ok_ms": LAG_OK_MS,
        "capacity": cap,
        "rows": rows,
        "passed": all(r["passed"] for r in rows),
    }


def _line(r: dict[str, Any]) -> str:
    a, rej, lag = r["accepted_ms"], r["rejected_ms"], r["schedule_lag_ms"]
    return (
        f"{r['multiple']:g}x = {r['offered_per_s']:,.0f}/s offered, {r['issued_per_s']:,.0f}/s "
        f"issued: {r['accepted_per_s']:,.0f}/s accepted p50 {a['p50']:.1f} p99 {a['p99']:.1f} "
        f"p99.9 {a['p99.9']:.1f} ms (in the engine p99 {r['accepted_in_engine_ms']['p99']:.1f}"
        f" ms); {r['rejected']:,} rejected p50 {rej['p50']:.1f} p99 {rej['p99']:.1f} ms; "
        f"{r['statuses']}; lag p99 {lag['p99']:.1f} ms; {'pass' if r['passed'] else 'FAIL'}"
    )


def _ms(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:,.{digits}f}"


def _cpus(cpus: list[int]) -> str:
    return "CPU " + ",".join(map(str, cpus)) if cpus else "every CPU"


def markdown(result: dict[str, Any]) -> str:
    cap, lay = result["capacity"], result["layout"]
    lines = [
        "# Open-loop overload",
        "",
        f"Command: `{result['command']}`"
        + (f" on {result['machine']['date']}" if "machine" in result else "")
        + f". OrderSight on {_cpus(lay['server_cpus'])} with {lay['workers']} front "
        f"process(es) and its defaults (`max_queue` sized from the service time x "
        f"`max_queue_ms` = {result['max_queue_ms']:g} ms, `max_in_flight` 2048 per front), "
        f"the retry table off; the generator's {lay['generator_procs']} process(es) on "
        f"{_cpus(lay['client_cpus'])}.{describe_revision(result.get('revision', {}))} "
        f"Capacity: {cap['calls_per_s']:,.0f} Score calls/s, the "
        f"best of {len(cap['runs'])} closed-loop runs at concurrency {CAPACITY_CONCURRENCY}. "
        f"Each offered rate: Poisson arrivals for {result['seconds']:g} s after "
        f"{result['warmup_s']:g} s of warm-up, each call with a {result['deadline_s']:g} s "
        f"deadline. Bound: accepted p99 <= {result['bound_ms']:g} ms (`max_queue_ms` + "
        f"{result['bound_ms'] - result['max_queue_ms']:g} ms for the front, the hop and the "
        "answer's way back) and nothing CANCELLED. Latencies from issue to answer; "
        '"in the engine": the accepted answers\' own `latency_us`, from the engine taking the '
        f"call to its answer. The generator kept up when its schedule lag p99 <= "
        f"{result['lag_ok_ms']:g} ms and it skipped no call (one it could not issue within "
        "the deadline).",
        "",
        "| offered | calls/s offered / issued | accepted calls/s | accepted p50 / p99 / p99.9 ms "
        "| in the engine p50 / p99 ms | rejected (engine: queue_full / deadline) "
        "| rejected p50 / p99 ms "
        "| OK / RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED / CANCELLED / other "
        "| schedule lag p50 / p99 / max ms, skipped "
        "| server (engine + fronts) / client CPU cores | bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, rej, lag, s = r["accepted_ms"], r["rejected_ms"], r["schedule_lag_ms"], r["statuses"]
        inside, cpu = r["accepted_in_engine_ms"], r["server_cpu_cores"]
        other = sum(v for k, v in s.items() if k not in REPORTED)
        eng = r["engine_rejected"]
        kept = "" if r["checks"]["generator_kept_up"] else " (generator behind)"
        lines.append(
            f"| {r['multiple']:g}x | {r['offered_per_s']:,.0f} / {r['issued_per_s']:,.0f} | "
            f"{r['accepted_per_s']:,.0f} | {_ms(a['p50'])} / {_ms(a['p99'])} / "
            f"{_ms(a['p99.9'])} | {_ms(inside['p50'], 2)} / {_ms(inside['p99'], 2)} | "
            f"{r['rejected']:,} ({eng.get('queue_full', 0):,.0f} / "
            f"{eng.get('deadline', 0):,.0f}) | {_ms(rej['p50'])} / {_ms(rej['p99'])} | "
            f"{s['OK']:,} / {s['RESOURCE_EXHAUSTED']:,}"
            f" / {s['DEADLINE_EXCEEDED']:,} / {s['CANCELLED']:,} / {other:,} | "
            f"{lag['p50']:.1f} / {lag['p99']:.1f} / {lag['max']:.0f}, {r['skipped']:,}{kept} | "
            f"{cpu['all']:.2f} ({cpu.get('engine', 0):.2f} + {cpu.get('front', 0):.2f}) / "
            f"{r['client_cpu_cores']:.2f} | "
            f"{'pass' if r['passed'] else 'FAIL'} |"
        )
    details = {k: v for r in result["rows"] for k, v in r["details"].items()}
    lines += [
        "",
        "The engine's DEADLINE_EXCEEDED (reason deadline) are among the DEADLINE_EXCEEDED, "
        "the rest the client's own deadline; a RESOURCE_EXHAUSTED beyond the engine's "
        'queue_full came from a front\'s `max_in_flight`. "other" holds every other status '
        "and the calls the generator skipped. First message of each error status: "
        + "; ".join(f'{k}: "{v}"' for k, v in sorted(details.items()))
        + ".",
        "",
        "Overall: " + ("pass" if result["passed"] else "FAIL") + ".",
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(result, indent=2))
    (out / "overload.md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import PORTS, TAIL, machine  # run.py imports this module

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models/default"))
    p.add_argument("--history", default=str(ROOT / "models/default-history.parquet"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument(
        "--shared", action="store_true",
        help="generator and server on every CPU (default: half the CPUs each)",
    )  # fmt: skip
    args = p.parse_args(argv)
    import pyarrow.parquet as pq

    from engine.codec.order_messages import orders_from_table

    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    history = pq.read_table(args.history)
    head = logs / "warm-head.parquet"
    pq.write_table(history.slice(0, history.num_rows - TAIL), head)
    tail = history.slice(history.num_rows - TAIL, TAIL)
    requests = [o.SerializeToString() for o in orders_from_table(tail)]
    layout = Layout.shared() if args.shared else Layout.pinned()
    result = measure(
        Path(args.models), head, requests, logs, lambda m: print(m, flush=True),
        PORTS["ordersight"] + 300, layout,
    )  # fmt: skip
    command = "python -m benchmarks.overload" + (" --shared" if args.shared else "")
    result = {"machine": machine(), **result, "command": command}
    write(result, out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
