"""Paired rounds: the serving targets' ratios, each taken within one round.

The echo floor, the link floor and OrderSight with one front serve at once; each round drives
every one of them in turn at the same load for a few seconds (the order rotating from round
to round), and a ratio to the echo is taken within the round. On this shared machine other
tenants move every server's figures from one minute to the next, so a sweep that measures
each server once, minutes apart, can flatter or wrong either side; within a round the servers
see the same neighbours. The report gives each ratio's median over the rounds and its range.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.loadgen import Load, run
from benchmarks.servers import cpu_by_process

ROUNDS = 5
BASE = "echo"


Server = tuple[Any, ...]  # (host:port, pid) or (host:port, pid, (key, value) sent per call)


def _one(server: Server, method: str, c: int, seconds: float, requests: list[bytes]) -> Any:
    target, pid, *metadata = server
    cpu0 = cpu_by_process(pid)
    load = Load(
        target, method, concurrency=c, duration_s=seconds, procs=1 if c == 1 else 2,
        metadata=tuple(metadata),
    )  # fmt: skip
    r = run(load, requests)
    cpu1 = cpu_by_process(pid)
    used = sum(cpu - cpu0.get(p, (role, 0.0))[1] for p, (role, cpu) in cpu1.items())
    r["server_cpu_us"] = used / max(r["completed"], 1) * 1e6
    return r


def paired_rounds(
    servers: dict[str, Server],
    method: str,
    requests: list[bytes],
    seconds: float,
    log: Any,
    concurrencies: tuple[int, ...] = (1, 64),
    rounds: int = ROUNDS,
) -> list[dict[str, Any]]:
    """`servers`: name -> (host:port, pid[, metadata pair]), the echo among them as BASE,
    the metadata (a bearer token) sent with every call. One row per server
    and concurrency: median and range over the rounds of calls/s and server CPU per call
    as ratios to the echo's in the same round, and of p99 minus the echo's."""
    names = list(servers)
    rows = []
    for c in concurrencies:
        got: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for k in range(rounds):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                got[name].append(_one(servers[name], method, c, seconds, requests))
        base = got[BASE]
        for name in names:
            mine = got[name]
            series = {
                "calls_per_s_ratio": [
                    m["calls_per_s"] / b["calls_per_s"] for m, b in zip(mine, base, strict=True)
                ],
                "server_cpu_ratio": [
                    m["server_cpu_us"] / b["server_cpu_us"] for m, b in zip(mine, base, strict=True)
                ],
                "p99_minus_echo_ms": [
                    m["p99_ms"] - b["p99_ms"] for m, b in zip(mine, base, strict=True)
                ],
            }
            row: dict[str, Any] = {
                "server": name,
                "concurrency": c,
                "rounds": rounds,
                "calls_per_s": statistics.median(m["calls_per_s"] for m in mine),
                "server_cpu_us": statistics.median(m["server_cpu_us"] for m in mine),
                "p99_ms": statistics.median(m["p99_ms"] for m in mine),
            }
            for key, values in series.items():
                row[key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            rows.append(row)
            log(
                f"  {name:14s} c={c}: calls/s x{row['calls_per_s_ratio']['median']:.2f} "
                f"({row['calls_per_s_ratio']['min']:.2f}-{row['calls_per_s_ratio']['max']:.2f}), "
                f"CPU x{row['server_cpu_ratio']['median']:.2f} "
                f"({row['server_cpu_ratio']['min']:.2f}-{row['server_cpu_ratio']['max']:.2f}), "
                f"p99 {row['p99_minus_echo_ms']['median']:+.2f} ms vs echo"
            )
    return rows


def paired_point(rows: list[dict[str, Any]], server: str, c: int) -> dict[str, Any] | None:
    for r in rows:
        if r["server"] == server and r["concurrency"] == c:
            return r
    return None
