"""`python -m benchmarks.routing_serving`: what `ordersight.v1.Routing/Route` costs a real
server per case, beside Score on the same server, and where the time goes (also part of
`make bench`). Writes benchmarks/results/routing/serving.{md,json}.

Two servers (`ordersight serve --workers 1 --store <fresh SQLite> --routing-models <text
model>`), each with 20 agents upserted over gRPC:
- `full`: a realistic team (capacity 2 or 3). Its slots are taken by the first few dozen
  cases and nothing completes, so nearly every measured case is routed to its queue: the
  text model runs, no agent is eligible, the router scores none (`Router._why_queued`).
  The same server answers Score (held-out orders of the history's tail), the yardstick,
  and GetRoutedCase of cases it routed (`get-floor`): a Routing call that does no work of
  its own (parse, the routing thread's hop, an open case from memory, the answer), so
  Route's CPU less this floor is the work Route adds to the transport's.
- `free`: the same team with capacity 100 and every agent's load set back to 0 every
  RESET_EVERY_S while it is driven (SetAgentState; those calls' CPU is counted in Route's,
  which overstates it slightly), so every case is assigned: the router scores every eligible
  agent and the agent's row is written too. Driven twice: with the text model reading the
  case, and with the category (and priority) given, which skips the text model.

Every Route call carries a case_id used nowhere else (a repeated case_id is answered from
the stored routing without work): each run gets a fresh slice of SLICE requests, and after
each run the server's store must hold exactly as many of the run's cases as calls answered
(the load generator restarts each run at the slice's start and a second client process at
7,919; a run that wrapped around would leave fewer rows and stops the benchmark). Every call
must be OK.

Rounds are paired: each round drives every variant in turn for SECONDS at one concurrency
(1, then 16), the order rotating, and the Route/Score ratio of server CPU per call is taken
within the round. In the same run, in-process: Route through `RoutingService` without gRPC
(one call at a time, agents full and free), the text model alone (one case per call), the
router's choice alone (20 agents, free and full), and the store's write alone (one case per
commit on a fresh SQLite store, synchronous=FULL as the server's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow.parquet as pq
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry

from benchmarks.paired import _one
from benchmarks.paired_servers import _serve
from benchmarks.servers import server_process, wait_serving
from engine.codec.order_messages import orders_from_table
from engine.routing.case_sim import QUEUES, simulate_cases
from engine.routing.order_features import Line, features
from engine.routing.router import GENERAL_SKILL, CaseInfo, Router, RouterConfig
from engine.routing.text_model import TextRouter
from engine.serving import routing_input as ri
from engine.serving.routing import SERVICE as ROUTING
from engine.serving.routing import RoutingService
from engine.store import open_store
from engine.store.routing import QUEUED, RoutedCase, RoutingTables

ROOT = Path(__file__).resolve().parent.parent
ROUTE = "/ordersight.v1.Routing/Route"
GET = "/ordersight.v1.Routing/GetRoutedCase"
SCORE = "/ordersight.v1.OrderRisk/Score"
PORT = 50700
SECONDS = 3.0  # per variant and round
ROUNDS = 3
CONCURRENCY = (1, 16)
AGENTS = 20
SLICE = 16_000  # requests per run: the second client process starts at 7,919
POOL = 20_000  # simulated cases whose texts the requests carry (seed POOL_SEED, held out)
POOL_SEED = 11
RESET_EVERY_S = 1.0
IN_PROCESS_CASES = 1_000
STORE_WRITES = 300
WARM_CASES = 200
VARIANTS = {  # name -> (server, with the category given)
    "score": ("full", False),
    "get-floor": ("full", False),
    "route-text-full": ("full", False),
    "route-text-free": ("free", False),
    "route-category-free": ("free", True),
}


# --- inputs ---------------------------------------------------------------------------------


def text_model(logs: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """The routing text model: `models/routing/default` when `make models` trained it, else
    one trained into `logs` (kept for the next run)."""
    default = ROOT / "models/routing/default"
    if (default / "manifest.json").is_file():
        return default, "models/routing/default"
    folder = logs / "text-model"
    if not (folder / "manifest.json").is_file():
        cases = logs / "train-cases.parquet"
        log("training the routing text model (6,000 simulated cases)")
        cli = [sys.executable, "-m", "engine.cli", "route"]
        subprocess.run([*cli, "simulate", "--cases", "6000", "--out", str(cases)], check=True)
        subprocess.run(
            [*cli, "train", "--cases", str(cases), "--text-cols", "subject,body",
             "--label-col", "queue", "--priority-col", "priority", "--out", str(folder)],
            check=True,
        )  # fmt: skip
    return folder, "route simulate --cases 6000 + route train, in the logs folder"


def team(capacity: Callable[[int], int]) -> list[pb.RoutingAgent]:
    """20 agents over the simulator's queues: two or three skills each (every queue has five
    to eight agents), `general` for one in four, levels 1..5, half speaking German too,
    always on shift."""
    rng = random.Random(20)
    out = []
    for i in range(AGENTS):
        skills = [QUEUES[i % len(QUEUES)], QUEUES[(i + 3) % len(QUEUES)]]
        if i % 3 == 0:
            skills.append(QUEUES[(i + 5) % len(QUEUES)])
        if i % 4 == 0:
            skills.append(GENERAL_SKILL)
        out.append(
            pb.RoutingAgent(
                agent_id=f"agent-{i:02d}", name=f"Agent {i:02d}", team="order-desk",
                skills=[pb.AgentSkill(skill=s, level=rng.randint(1, 5)) for s in skills],
                languages=["en", "de"] if i % 2 == 0 else ["en"], capacity=capacity(i),
                shift=pb.AgentShift(start_minute=0, end_minute=1440),
            )
        )  # fmt: skip
    return out


def _case(row: dict[str, Any], case_id: str, with_category: bool) -> pb.RoutingCase:
    queue = row["queue"]
    return pb.RoutingCase(
        case_id=case_id, order_id=row["order_id"], customer_tier=row["customer_tier"],
        language=row["language"], subject=row["subject"], body=row["body"],
        lines=[pb.RoutingLine(sku=row["sku"], category=row["category"],
                              quantity=row["quantity"],
                              built_to_order=queue == "hardware_config")],
        amount=row["amount"], currency="EUR",
        payment_terms="net90" if queue == "payment_terms" else "",
        category=queue if with_category else "", priority=row["priority"] if with_category else "",
    )  # fmt: skip


def route_requests(
    pool: list[dict[str, Any]], prefix: str, start: int, n: int, with_category: bool
) -> list[bytes]:
    """`n` Route requests with case ids `prefix`-0..n-1, over the pool from `start`."""
    return [
        pb.RouteRequest(
            case=_case(pool[(start + i) % len(pool)], f"{prefix}-{i}", with_category)
        ).SerializeToString()
        for i in range(n)
    ]


# --- the servers ----------------------------------------------------------------------------


def upsert(target: str, agents: list[pb.RoutingAgent]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RoutingStub(channel)
        for a in agents:
            stub.UpsertAgent(a, timeout=10)


@contextlib.contextmanager
def keep_free(target: str, agents: list[pb.RoutingAgent]) -> Iterator[list[int]]:
    """Every agent's load back to 0 every RESET_EVERY_S while the block runs; yields a
    one-item list that ends up holding the SetAgentState calls made."""
    stop, made = threading.Event(), [0]

    def loop() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.RoutingStub(channel)
            while not stop.is_set():
                for a in agents:
                    stub.SetAgentState(
                        pb.SetAgentStateRequest(agent_id=a.agent_id, load=0), timeout=5
                    )
                    made[0] += 1
                stop.wait(RESET_EVERY_S)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        stop.set()
        thread.join(10)


def _stored(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


def _fresh(db: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def rounds(
    servers: dict[str, tuple[str, int, Path]],
    pool: list[dict[str, Any]],
    scores: list[bytes],
    gets: list[bytes],
    free_team: list[pb.RoutingAgent],
    log: Callable[[str], None],
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Per variant and concurrency, one `_one` result per round (rounds paired, order
    rotating), each Route run checked: no error, every answered case stored once."""
    names = list(VARIANTS)
    got: dict[str, dict[int, list[dict[str, Any]]]] = {
        n: {c: [] for c in CONCURRENCY} for n in names
    }
    run = 0
    for c in CONCURRENCY:
        for k in range(ROUNDS):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                server, with_category = VARIANTS[name]
                target, pid, db = servers[server]
                run += 1
                prefix = f"{name}-{run}"
                if name in ("score", "get-floor"):
                    method, reqs = (SCORE, scores) if name == "score" else (GET, gets)
                    r = _one((target, pid), method, c, SECONDS, reqs)
                else:
                    reqs = route_requests(pool, prefix, run * 1_009, SLICE, with_category)
                    free = keep_free(target, free_team) if server == "free" else None
                    with free or contextlib.nullcontext([0]) as made:
                        r = _one((target, pid), ROUTE, c, SECONDS, reqs)
                    r["set_state_calls"] = made[0]
                    (stored,) = _stored(
                        db, "SELECT COUNT(*) FROM routing_cases WHERE case_id LIKE ?",
                        (f"{prefix}-%",),
                    )[0]  # fmt: skip
                    if stored != r["completed"]:
                        raise RuntimeError(
                            f"{name} c={c}: {r['completed']} calls answered, {stored} cases "
                            "stored: case ids repeated (the load wrapped around its slice)"
                        )
                    (queued,) = _stored(
                        db, "SELECT COUNT(*) FROM routing_cases WHERE case_id LIKE ? "
                        "AND status = ?", (f"{prefix}-%", QUEUED),
                    )[0]  # fmt: skip
                    r["queued_share"] = queued / max(stored, 1)
                if r["errors"]:
                    raise RuntimeError(f"{name} c={c}: {r['errors']} calls failed; see the log")
                got[name][c].append(r)
                log(
                    f"  {name:20s} c={c:2d}: {r['calls_per_s']:7,.0f} calls/s, "
                    f"{r['server_cpu_us']:6.0f} µs CPU/call, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms"
                    + (f", {r['queued_share']:.0%} queued" if "queued_share" in r else "")
                )
    return got


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summary(got: dict[str, dict[int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for name, by_c in got.items():
        for c, runs in by_c.items():
            base = got["score"][c]
            row: dict[str, Any] = {"variant": name, "concurrency": c, "rounds": len(runs)}
            for key in ("calls_per_s", "server_cpu_us", "p50_ms", "p99_ms"):
                row[key] = _spread([r[key] for r in runs])
            row["cpu_x_score"] = _spread(
                [r["server_cpu_us"] / b["server_cpu_us"] for r, b in zip(runs, base, strict=True)]
            )
            row["cpu_over_floor_us"] = _spread(
                [
                    r["server_cpu_us"] - f["server_cpu_us"]
                    for r, f in zip(runs, got["get-floor"][c], strict=True)
                ]
            )
            row["calls"] = sum(r["completed"] for r in runs)
            if name.startswith("route"):
                row["queued_share"] = sum(r["queued_share"] * r["completed"] for r in runs) / max(
                    row["calls"], 1
                )
                row["set_state_per_route"] = sum(r["set_state_calls"] for r in runs) / max(
                    row["calls"], 1
                )
            rows.append(row)
    return rows


# --- in-process -----------------------------------------------------------------------------


def _per_case_us(fn: Callable[[], None], n: int) -> dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {
        "wall_us": (time.perf_counter() - t0) / n * 1e6,
        "cpu_us": (time.process_time() - c0) / n * 1e6,
    }


def _infos(pool: list[dict[str, Any]], now: float) -> list[CaseInfo]:
    out = []
    for i, row in enumerate(pool):
        named = features(
            amount=row["amount"],
            lines=[Line(row["sku"], row["category"], row["quantity"],
                        row["queue"] == "hardware_config")],
            payment_terms="net90" if row["queue"] == "payment_terms" else "",
            customer_tier=row["customer_tier"],
        )  # fmt: skip
        out.append(CaseInfo(f"c{i}", row["queue"], row["priority"], row["language"], named, now))
    return out


def _routed(info: CaseInfo, now: float) -> RoutedCase:
    return RoutedCase(
        case_id=info.case_id, order_id="SO-1", customer_id="", customer_tier="standard",
        customer_orders=-1, language=info.language, amount=1000.0, currency="EUR",
        category=info.category, confidence=0.9, priority=info.priority, source="order",
        features=ri.jsonable(dict(info.features)), status=QUEUED, agent_id=None,
        queue=info.category, agent_experience=0, agent_level=0, predicted_handle_s=0.0,
        predicted_resolution_s=0.0, sla_s=3600.0, created_at=now,
        reasons=["every agent with the skill installation is at capacity: waits in its queue"],
    )  # fmt: skip


async def _service_route(
    model: Path, pool: list[dict[str, Any]], agents: list[pb.RoutingAgent], db: Path, free: bool
) -> dict[str, float]:
    """Route through `RoutingService` in this process (no gRPC), one call at a time, each
    committed alone; with `free`, the loads are reset between chunks of 50, untimed."""
    svc = RoutingService(str(_fresh(db)), str(model), CollectorRegistry())
    wall = cpu = 0.0
    try:
        for a in agents:
            await svc.unary[f"{ROUTING}/UpsertAgent"](a.SerializeToString(), None)
        route = svc.unary[f"{ROUTING}/Route"]
        for req in route_requests(pool, "warm", 0, WARM_CASES, False):
            await route(req, None)
        reqs = route_requests(pool, "case", WARM_CASES, IN_PROCESS_CASES, False)
        for start in range(0, len(reqs), 50):
            if free:
                for a in agents:
                    reset = pb.SetAgentStateRequest(agent_id=a.agent_id, load=0)
                    await svc.unary[f"{ROUTING}/SetAgentState"](reset.SerializeToString(), None)
            t0, c0 = time.perf_counter(), time.process_time()
            for req in reqs[start : start + 50]:
                await route(req, None)
            wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
        queued = sum(c.status == QUEUED for c in svc.open.values())
    finally:
        svc.close()
    if free and queued:
        raise RuntimeError(f"in-process Route, agents free: {queued} cases queued")
    return {"wall_us": wall / len(reqs) * 1e6, "cpu_us": cpu / len(reqs) * 1e6}


def in_process(
    model: Path,
    pool: list[dict[str, Any]],
    teams: dict[str, list[pb.RoutingAgent]],
    logs: Path,
) -> dict[str, dict[str, float]]:
    cases = pool[:IN_PROCESS_CASES]
    out: dict[str, dict[str, float]] = {}
    for name in teams:
        out[f"Route via RoutingService (no gRPC), agents {name}"] = asyncio.run(
            _service_route(model, pool, teams[name], logs / "in-process-service.db", name == "free")
        )
    agents = teams["free"]
    text = TextRouter.load(model)
    text.route([["warm up"], ["the session"]])

    def read() -> None:
        for row in cases:
            text.route([[row["subject"]], [row["body"]]])

    out["text model, one case"] = _per_case_us(read, len(cases))

    now = time.time()  # a timestamp (shifts are wall-clock), not a duration
    router = Router(RouterConfig())
    for a in agents:
        router.upsert_agent(ri.agent_from_pb(a, None))
    infos = _infos(cases, now)

    def choose() -> None:
        for info in infos:
            router.choose(info, now)

    out["router choice, 20 agents free"] = _per_case_us(choose, len(infos))
    for a in router.agents.values():
        a.load = a.capacity + router.config.agent_queue_max
    out["router choice, 20 agents full"] = _per_case_us(choose, len(infos))

    store = open_store(str(_fresh(logs / "in-process-store.db")))
    try:
        tables = RoutingTables(store)
        routed = [_routed(info, now) for info in infos[:STORE_WRITES]]

        def write() -> None:
            for rc in routed:
                with tables.tx():
                    tables.put_case(rc)

        out["store write, one case per commit"] = _per_case_us(write, len(routed))

        def lookup() -> None:
            for rc in routed:
                tables.case(rc.case_id + "-new")

        out["store lookup of an unknown case_id"] = _per_case_us(lookup, len(routed))
    finally:
        store.close()
    return out


# --- report ---------------------------------------------------------------------------------


def _cell(s: dict[str, float], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def reading(rows: list[dict[str, Any]]) -> str:
    """The issue's question in one paragraph: per case, Route's server CPU in all and over
    the floor of a Routing call, against 1 ms; its p50 at concurrency 1."""
    by = {(r["variant"], r["concurrency"]): r for r in rows}
    route = [r for r in rows if r["variant"].startswith("route")]
    worst = max(route, key=lambda r: r["server_cpu_us"]["median"])
    worst_over = max(route, key=lambda r: r["cpu_over_floor_us"]["median"])
    full1, full16 = by[("route-text-full", 1)], by[("route-text-full", 16)]
    free1, free16 = by[("route-text-free", 1)], by[("route-text-free", 16)]

    def us(r: dict[str, Any], key: str = "server_cpu_us") -> str:
        return f"{r[key]['median']:.0f} µs"

    def verdict(value: float) -> str:
        return "under" if value < 1000 else "over"

    return (
        f"Route's server CPU per case: {us(full1)} at concurrency 1 and {us(full16)} at 16 "
        f"with the agents full, {us(free1)} and {us(free16)} with agents free; the most, "
        f"{us(worst)} ({worst['variant']}, concurrency {worst['concurrency']}), is "
        f"{verdict(worst['server_cpu_us']['median'])} 1 ms. Over the floor of a Routing call "
        f"(GetRoutedCase, {us(by[('get-floor', 1)])} at 1), Route adds "
        f"{us(full1, 'cpu_over_floor_us')} (agents full) and {us(free1, 'cpu_over_floor_us')} "
        f"(free) at concurrency 1; the most, {us(worst_over, 'cpu_over_floor_us')}, is "
        f"{verdict(worst_over['cpu_over_floor_us']['median'])} 1 ms. p50 latency at "
        f"concurrency 1: {full1['p50_ms']['median']:.2f} ms (agents full), "
        f"{free1['p50_ms']['median']:.2f} ms (free), each waiting for its commit's fsync. "
        f"Route costs x{full1['cpu_x_score']['median']:.2f} a Score call's server CPU at 1, "
        f"x{full16['cpu_x_score']['median']:.2f} at 16."
    )


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        "# Routing/Route: server time per case",
        "",
        f"`python -m benchmarks.routing_serving` on {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {m.get('date', '')}. Text model: {result['model']}.",
        "",
        reading(result["rows"]),
        "",
        f"Two `ordersight serve --workers 1 --store <fresh SQLite> --routing-models` servers, "
        f"20 agents each; {ROUNDS} paired rounds of {SECONDS:.0f} s per variant and "
        "concurrency, the order rotating; median (min-max) over the rounds. Server CPU is the "
        "engine's and its front's, per call answered. x Score: the ratio to Score's CPU per "
        "call on the `full` server in the same round. Every Route call has its own case_id.",
        "",
        "- `route-text-full`: realistic team (capacity 2-3), its slots taken: the text model "
        "reads the case, the case waits in its queue (no agent scored).",
        "- `route-text-free`: same team with capacity 100, loads reset every "
        f"{RESET_EVERY_S} s: the text model reads the case, every eligible agent is scored, "
        "one takes it (its row written too). The reset calls' CPU is counted in Route's.",
        "- `route-category-free`: as `route-text-free`, category and priority given: no text "
        "model.",
        "- `score`: Score of held-out orders of the history, on the `full` server.",
        "- `get-floor`: GetRoutedCase of the `full` server's open cases: a Routing call with "
        "no work of its own. Over floor: a variant's CPU per call less this one's, same round.",
        "",
        "| variant | concurrency | calls/s | server CPU µs/call | over floor µs | x Score CPU "
        "| p50 ms | p99 ms | queued |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        queued = f"{r['queued_share']:.0%}" if "queued_share" in r else ""
        out.append(
            f"| {r['variant']} | {r['concurrency']} | {_cell(r['calls_per_s'], ',.0f')} | "
            f"{_cell(r['server_cpu_us'], '.0f')} | {_cell(r['cpu_over_floor_us'], '.0f')} | "
            f"{_cell(r['cpu_x_score'], '.2f')} | "
            f"{_cell(r['p50_ms'], '.2f')} | {_cell(r['p99_ms'], '.2f')} | {queued} |"
        )
    resets = ", ".join(
        f"{r['variant']} at {r['concurrency']}: {r['set_state_per_route']:.3f}"
        for r in result["rows"]
        if r["variant"].endswith("-free")
    )
    out += [
        "",
        f"SetAgentState calls (the load resets) per Route call: {resets}.",
        "",
        "In-process, one case at a time, in the same run (µs per case; CPU leaves out the "
        "time the disk or other tenants held; the store write's wall time is its fsync):",
        "",
        "| part | wall µs | CPU µs |",
        "|---|---|---|",
    ]
    for part, t in result["in_process"].items():
        out.append(f"| {part} | {t['wall_us']:.0f} | {t['cpu_us']:.0f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_serving", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models/default"))
    p.add_argument("--history", default=str(ROOT / "models/default-history.parquet"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--port", type=int, default=PORT)
    args = p.parse_args(argv)
    out, logs = Path(args.out) / "routing", Path(args.out) / "logs" / "routing-serving"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, model_source = text_model(logs, print)
    hist = pq.read_table(args.history)
    head = logs / "head.parquet"
    pq.write_table(hist.slice(0, hist.num_rows - 20_000), head)
    scores = [o.SerializeToString() for o in orders_from_table(hist.slice(hist.num_rows - 20_000))]
    pool: list[dict[str, Any]] = simulate_cases(POOL, seed=POOL_SEED).to_pylist()
    teams = {"full": team(lambda i: 2 + (i % 3 == 0)), "free": team(lambda i: 100)}
    servers: dict[str, tuple[str, int, Path]] = {}
    with contextlib.ExitStack() as stack:
        procs = {}
        for k, name in enumerate(teams):
            db = _fresh(logs / f"store-{name}.db")
            cmd = _serve(
                Path(args.models), head, args.port + k, "--store", str(db),
                "--routing-models", str(model),
            )  # fmt: skip
            procs[name] = stack.enter_context(server_process(cmd, logs / f"server-{name}.log"))
            servers[name] = (f"127.0.0.1:{args.port + k}", procs[name].pid, db)
        for name, (target, _, _) in servers.items():
            wait_serving(target, procs[name])
            upsert(target, teams[name])
            with grpc.insecure_channel(target) as channel:  # take the full team's slots
                route = channel.unary_unary(ROUTE)
                for req in route_requests(pool, f"warm-{name}", 0, WARM_CASES, False):
                    route(req, timeout=10)
        print(f"serving after {time.perf_counter() - t0:.0f} s")
        gets = [
            pb.GetRoutedCaseRequest(case_id=f"warm-full-{i}").SerializeToString()
            for i in range(WARM_CASES)
        ]
        got = rounds(servers, pool, scores, gets, teams["free"], print)
    rows = summary(got)
    parts = in_process(model, pool, teams, logs)
    for part, t in parts.items():
        print(f"  {part}: {t['wall_us']:.0f} µs wall, {t['cpu_us']:.0f} µs CPU")
    result = {
        "machine": machine(), "model": model_source, "seconds": SECONDS, "rounds": ROUNDS,
        "rows": rows, "in_process": parts, "runs": got,
        "elapsed_s": time.perf_counter() - t0,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(result, indent=2))
    (out / "serving.md").write_text(markdown(result))
    print((out / "serving.md").read_text())
    print(f"done in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
