"""Bulk throughput: ScoreBatch over gRPC (repeated Order and Arrow IPC) and `score-file`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.ipc
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.codec.order_messages import orders_from_table
from engine.decision.score_file import score_file
from engine.orders.schema import ORDER_SCHEMA

SIZES = (1_000, 10_000, 100_000)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def score_batch(target: str, history: pa.Table, repeats: int = 3) -> list[dict[str, Any]]:
    """Orders/s of one ScoreBatch call, client-side wall time (serialisation included)."""
    options = [
        ("grpc.max_send_message_length", 512 << 20),
        ("grpc.max_receive_message_length", 512 << 20),
    ]
    rows = []
    with grpc.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.OrderRiskStub(channel)
        for n in SIZES:
            table = history.slice(history.num_rows - n, n).select(ORDER_SCHEMA.names)
            requests = {
                "orders": pb.ScoreBatchRequest(
                    orders=pb.OrderList(orders=orders_from_table(table))
                ),
                "arrow_ipc": pb.ScoreBatchRequest(arrow_ipc=_ipc(table)),
                "arrow_ipc+arrow_response": pb.ScoreBatchRequest(
                    arrow_ipc=_ipc(table), arrow_response=True
                ),
            }
            for kind, request in requests.items():
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    response = stub.ScoreBatch(request, timeout=300)
                    best = min(best, time.perf_counter() - t0)
                    got = len(response.decisions) or n * bool(response.decisions_arrow_ipc)
                    if got != n:
                        raise RuntimeError(f"ScoreBatch returned {got} of {n} decisions")
                rows.append({"rpc": f"ScoreBatch/{kind}", "orders": n, "orders_per_s": n / best})
    return rows


def score_file_rate(models: Path, history_path: Path, out: Path) -> dict[str, Any]:
    """`score-file`'s orders/s, in a fresh process (as the CLI runs; the benchmark's own heap
    would slow Python's garbage collector): the first call also loads the models and
    Numba's cached kernels, so it is reported apart; the throughput is the second call's."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch", str(models), str(history_path), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    first, second = json.loads(child.stdout.strip().splitlines()[-1])
    n = second["orders"]
    return {
        "rpc": "score-file",
        "orders": n,
        "orders_per_s": n / second["seconds"],
        "seconds": second["seconds"],
        "first_call_seconds": first["seconds"],
    }


def _time_score_file(models: str, history_path: str, out: str) -> list[dict[str, Any]]:
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        n = score_file(models, history_path, out)
        runs.append({"orders": n, "seconds": time.perf_counter() - t0})
    return runs


if __name__ == "__main__":
    print(json.dumps(_time_score_file(*sys.argv[1:4])))
