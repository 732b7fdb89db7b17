"""`python -m benchmarks.governance`: what the review store costs a Score call, in paired
rounds beside the echo floor (also part of `make bench`). Writes
benchmarks/results/governance.{json,md}."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.paired_servers import store_rounds
from engine.codec.order_messages import orders_from_table

ROOT = Path(__file__).resolve().parent.parent
SCORE = "/ordersight.v1.OrderRisk/Score"


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    out = [
        "# The review store's cost on Score",
        "",
        f"`python -m benchmarks.governance` on {machine.get('cpu', '?')}, "
        f"{machine.get('cores', '?')} cores, {machine.get('date', '')}. Paired rounds: the "
        "servers run at once and are driven in turn; ratios to the echo server of the same round.",
        "",
        "| server | concurrency | calls/s | x echo (min-max) | server CPU µs/call | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["calls_per_s_ratio"]
        out.append(
            f"| {r['server']} | {r['concurrency']} | {r['calls_per_s']:,.0f} | "
            f"{q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) | {r['server_cpu_us']:.0f} | "
            f"{r['p99_ms']:.2f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.governance", description=__doc__)
    p.add_argument("--models", default=str(ROOT / "models/default"))
    p.add_argument("--history", default=str(ROOT / "models/default-history.parquet"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--port", type=int, default=50451)
    args = p.parse_args(argv)
    out, logs = Path(args.out), Path(args.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    hist = pq.read_table(args.history)
    head = logs / "governance-head.parquet"
    pq.write_table(hist.slice(0, hist.num_rows - 20_000), head)
    tail = hist.slice(hist.num_rows - 20_000)
    requests = [o.SerializeToString() for o in orders_from_table(tail)]
    rows = store_rounds(Path(args.models), head, requests, logs, print, args.port, SCORE)
    m = machine()
    (out / "governance.json").write_text(json.dumps({"machine": m, "store": rows}, indent=2))
    (out / "governance.md").write_text(markdown(rows, m))
    print((out / "governance.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
