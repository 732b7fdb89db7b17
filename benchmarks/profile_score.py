"""Where a Score call's server CPU goes: py-spy samples the engine and front processes under
closed-loop load (concurrency 64 and 1), and the samples are summed by part of the path.

    python -m benchmarks.profile_score [--workers 1] [--seconds 8]

writes benchmarks/results/profile.md. py-spy (a sampling profiler that attaches to a
running process, in the bench extras) sees Python frames and, with --native, the C frames
below them; samples spent waiting in epoll are idle time and are left out.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.loadgen import Load, run
from benchmarks.run import SCORE, TAIL
from benchmarks.servers import ROOT, cpu_by_process, server_process, wait_serving
from engine.codec.order_messages import orders_from_table

# The environment's own py-spy (the bench extras install it beside this Python), so the
# script runs as `.venv/bin/python -m ...` without the venv on PATH.
PY_SPY = str(Path(sys.executable).with_name("py-spy"))
if not Path(PY_SPY).exists():
    PY_SPY = "py-spy"

PORT = 50191
# Part of the path → substrings of a frame ("function (file:line)"), first match wins, the
# innermost frame deciding.
PARTS = (
    ("decode (wire parser)", ("order_decoder.py",)),
    ("validate and encode", ("orders/arrays.py", "orders/batch.py", "orders/columns.py")),
    ("features (velocity state)", ("features/",)),
    ("tier one", ("models/trees.py", "TierOne")),
    ("tier two (onnxruntime)", ("onnxruntime", "TierTwo")),
    ("reasons (TreeSHAP)", ("treeshap", "reasons.py")),
    ("policy and cascade", ("decision/",)),
    ("answer encoding", ("decision_encoder.py",)),
    ("alert monitor and metrics", ("monitoring/", "prometheus_client")),
    ("link to the fronts", ("serving/link.py", "serving/frames.py", "serving/batcher.py")),
    ("data plane glue", ("serving/data_plane.py",)),
    ("front: forwarding", ("serving/front.py",)),
    ("gRPC and asyncio", ("grpc", "asyncio", "selectors", "threading")),
)


def _part(stack: list[str]) -> str:
    for frame in reversed(stack):
        for part, keys in PARTS:
            if any(k in frame for k in keys):
                return part
    return "other"


def _summarize(raw: Path) -> tuple[collections.Counter[str], int]:
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        stack = stack_text.split(";")
        if any("select (selectors.py" in f or "epoll_wait" in f for f in stack[-3:]):
            continue  # idle, waiting for I/O
        parts[_part(stack)] += int(n)
        total += int(n)
    return parts, total


def profile(workers: int, seconds: float, out: Path) -> str:
    history = pq.read_table(ROOT / "models/default-history.parquet")
    logs = ROOT / "benchmarks/results/logs"
    logs.mkdir(parents=True, exist_ok=True)
    head = logs / "warm-head.parquet"
    pq.write_table(history.slice(0, history.num_rows - TAIL), head)
    tail = history.slice(history.num_rows - TAIL, TAIL)
    requests = [o.SerializeToString() for o in orders_from_table(tail)]
    serve = [
        sys.executable, "-m", "engine.cli", "serve", "--port", str(PORT),
        "--warm-from", str(head), "--workers", str(workers),
    ]  # fmt: skip
    lines = [
        "# Where Score's server CPU goes",
        "",
        f"Command: `python -m benchmarks.profile_score --workers {workers}`. py-spy samples "
        "(100 per second, idle samples left out) of each server process under closed-loop "
        "load, summed by the innermost frame's part of the path; the CPU per call is "
        "measured from /proc over the same load.",
    ]
    with server_process(serve, logs / "profile-server.log") as proc:
        wait_serving(f"127.0.0.1:{PORT}", proc)
        for concurrency in (64, 1):
            load = Load(f"127.0.0.1:{PORT}", SCORE, concurrency=concurrency,
                        duration_s=seconds + 4, procs=1 if concurrency == 1 else 2)  # fmt: skip
            box: dict[str, Any] = {}
            t = threading.Thread(target=lambda b=box, ld=load: b.update(run(ld, requests)))
            cpu0 = cpu_by_process(proc.pid)
            t.start()
            time.sleep(3)  # past the generator's start and warm-up
            samples = {}
            spies = []
            for pid, (role, _) in cpu0.items():
                raw = logs / f"profile-{role}-{pid}-c{concurrency}.txt"
                spies.append((role, raw, subprocess.Popen(
                    [PY_SPY, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
                     "-f", "raw", "-o", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )))  # fmt: skip
            for role, raw, spy in spies:
                spy.wait()
                samples.setdefault(role, []).append(_summarize(raw))
            t.join()
            cpu1 = cpu_by_process(proc.pid)
            r = box
            cpu = {}
            for pid, (role, c) in cpu1.items():
                cpu[role] = cpu.get(role, 0.0) + c - cpu0.get(pid, (role, 0.0))[1]
            lines += [
                "",
                f"## Concurrency {concurrency}: {r['calls_per_s']:,.0f} calls/s",
                "",
                "Server CPU per call: "
                + ", ".join(f"{k} {v / r['completed'] * 1e6:,.0f} µs" for k, v in cpu.items()),
                "",
                "| process | part of the path | share of its busy samples | µs per call |",
                "|---|---|---|---|",
            ]
            for role, summaries in samples.items():
                parts: collections.Counter[str] = collections.Counter()
                total = 0
                for p, n in summaries:
                    parts.update(p)
                    total += n
                us = cpu[role] / r["completed"] * 1e6
                for part, n in parts.most_common():
                    lines.append(f"| {role} | {part} | {n / total:.0%} | {us * n / total:,.0f} |")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/profile.md"))
    args = p.parse_args(argv)
    print(profile(args.workers, args.seconds, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
