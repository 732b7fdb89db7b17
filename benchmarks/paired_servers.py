"""The server sets `make bench` compares in paired rounds (`benchmarks.paired`).

- Serving: the echo floor, the link floor, OrderSight with one front, the same with a
  challenger in shadow and with a bearer token checked on every call.
- Durability: OrderSight with one front and no decision log, then with the log in each
  durability mode (off, batched, fsync), beside the echo.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any

import grpc
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from benchmarks.paired import paired_rounds
from benchmarks.servers import server_process, wait_port, wait_serving
from engine.decision_log import segments
from engine.serving.auth import hash_token, new_token

SECONDS = 3.0  # per server and round
CONCURRENCY = (1, 16, 64)
DURABILITY_ROUNDS = 3


def _serve(models: Path, head: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "engine.cli", "serve", "--models", str(models),
        "--port", str(port), "--warm-from", str(head), "--workers", "1", *extra,
    ]  # fmt: skip


def _start(
    cmds: dict[str, list[str]], port: int, logs: Path, stack: contextlib.ExitStack
) -> dict[str, tuple[Any, ...]]:
    servers: dict[str, tuple[Any, ...]] = {}
    for k, (name, cmd) in enumerate(cmds.items()):
        proc = stack.enter_context(server_process(cmd, logs / f"paired-{name}.log"))
        target = f"127.0.0.1:{port + k}"
        if name == "echo":
            wait_port(target)
        else:
            wait_serving(target, proc)
        servers[name] = (target, proc.pid)
    return servers


def serving_rounds(
    models: Path, head: Path, requests: list[bytes], logs: Path, log: Any, port: int, method: str
) -> list[dict[str, Any]]:
    secret = new_token()  # the +auth server checks it on every call, as a deployment would
    auth = logs / "paired-auth.toml"
    auth.write_text(
        f'[[tokens]]\nname = "bench"\nsha256 = "{hash_token(secret)}"\nroles = ["score"]\n'
    )
    cmds = {
        "echo": [sys.executable, "-m", "benchmarks.echo_server", "--port", str(port)],
        "link-floor": [sys.executable, "-m", "benchmarks.link_floor", "--port", str(port + 1)],
        "ordersight-1w": _serve(models, head, port + 2),
        "ordersight-1w+challenger": _serve(models, head, port + 3),
        "ordersight-1w+auth": _serve(models, head, port + 4, "--config", str(auth)),
    }
    with contextlib.ExitStack() as stack:
        servers = _start(cmds, port, logs, stack)
        # the same models in shadow, as a fair load
        _set_challenger(servers["ordersight-1w+challenger"][0], models)
        servers["ordersight-1w+auth"] += (("authorization", f"Bearer {secret}"),)
        return paired_rounds(servers, method, requests, SECONDS, log, CONCURRENCY)


def _set_challenger(target: str, models: Path) -> None:
    with grpc.insecure_channel(target) as channel:
        pb_grpc.ModelAdminStub(channel).SetChallenger(
            pb.LoadModelRequest(path=str(models.resolve())), timeout=120
        )


def durability_rounds(
    models: Path, head: Path, requests: list[bytes], logs: Path, log: Any, port: int, method: str
) -> dict[str, Any]:
    """The paired rows, and the bytes the log took per decision in fsync mode."""
    folders = {mode: logs / f"decision-log-{mode}" for mode in ("off", "batched", "fsync")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    cmds = {
        "echo": [sys.executable, "-m", "benchmarks.echo_server", "--port", str(port)],
        "ordersight-1w": _serve(models, head, port + 1),
    }
    for k, (mode, folder) in enumerate(folders.items()):
        config = logs / f"decision-log-{mode}.toml"
        config.write_text(f'log_dir = "{folder}"\nlog_durability = "{mode}"\n')
        cmds[f"ordersight-1w+log-{mode}"] = _serve(
            models, head, port + 2 + k, "--config", str(config)
        )
    with contextlib.ExitStack() as stack:
        servers = _start(cmds, port, logs, stack)
        rows = paired_rounds(
            servers, method, requests, SECONDS, log, CONCURRENCY, rounds=DURABILITY_ROUNDS
        )
    size = rows_logged = 0
    for path in segments.segments(folders["fsync"]):
        scan = segments.scan(path)
        size, rows_logged = size + scan.size, rows_logged + scan.rows
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "bytes_per_row": size / max(rows_logged, 1), "rows_logged": rows_logged}


def store_rounds(
    models: Path, head: Path, requests: list[bytes], logs: Path, log: Any, port: int, method: str
) -> list[dict[str, Any]]:
    """OrderSight with one front, then with the review store (SQLite: every REVIEW opens a
    case, every decision is indexed, on the store's thread), beside the echo."""
    db = logs / "paired-store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    cmds = {
        "echo": [sys.executable, "-m", "benchmarks.echo_server", "--port", str(port)],
        "ordersight-1w": _serve(models, head, port + 1),
        "ordersight-1w+store": _serve(models, head, port + 2, "--store", str(db)),
    }
    with contextlib.ExitStack() as stack:
        servers = _start(cmds, port, logs, stack)
        return paired_rounds(servers, method, requests, SECONDS, log, CONCURRENCY, rounds=3)
