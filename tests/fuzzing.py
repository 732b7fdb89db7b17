"""Seeded mutational fuzzing of a real OrderSight server, over gRPC, in a child process.

Contract: every request, however malformed, is answered OK, INVALID_ARGUMENT,
RESOURCE_EXHAUSTED or ALREADY_EXISTS (an order id reused) within `RPC_TIMEOUT_S`, and the
server survives it. Anything else (INTERNAL, a hang seen as DEADLINE_EXCEEDED, a dead
process) is a `Failure`, whose request is saved under
$FUZZ_ARTIFACTS (or the caller's directory) as <kind>-s<seed>-c<case>.bin for
`python -m tests.fuzzing --replay FILE`. Kinds: `order` (an Order to Score), `batch_orders`
(a ScoreBatchRequest with orders) and `batch_arrow` (an Arrow IPC stream, plain, zstd or lz4,
mutated, then wrapped in a valid ScoreBatchRequest so that it reaches the Arrow reader). A seed
gives the same mutations; the inputs' times follow the clock, so a reproducer is the saved file.

Not atheris: the code under test runs in another process, much of it native (pyarrow's C++,
numba kernels), which atheris' Python coverage cannot see, so coverage would guide nothing;
a segfault there is caught from outside, by a seeded mutational fuzzer that keeps its inputs.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ordersight.v1 import risk_pb2 as pb

from training.simulate import simulate

# ALREADY_EXISTS: a mutated order that kept the id of one already scored (idempotent retries)
ACCEPTED = {
    grpc.StatusCode[c] for c in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "ALREADY_EXISTS")
}
KINDS = ("order", "batch_orders", "batch_arrow")
METHOD = {k: "/ordersight.v1.OrderRisk/ScoreBatch" for k in KINDS}
METHOD["order"] = "/ordersight.v1.OrderRisk/Score"
RPC_TIMEOUT_S = 10.0
START_TIMEOUT_S = 120.0
CHECK_EVERY = 25  # cases between liveness checks (any unexpected status checks at once)
SERVING = health_pb2.HealthCheckResponse.SERVING


class ChildServer:
    """`ordersight serve` in a child process on a free port, with a raw-bytes client."""

    def __init__(
        self,
        models: str | Path,
        *,
        env: dict[str, str] | None = None,
        file_size_limit: int | None = None,
        **settings: Any,
    ) -> None:
        """`settings` as ORDERSIGHT_* variables; `env`: more of the child's environment;
        `file_size_limit`: RLIMIT_FSIZE of the child, in bytes (a write past it fails with
        EFBIG, as on a full disk)."""
        self.models = str(models)
        self.settings = {f"ORDERSIGHT_{k.upper()}": str(v) for k, v in settings.items()}
        self.settings.update(env or {})
        self.file_size_limit = file_size_limit
        self._log_lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildServer:
        with socket.socket() as s:  # a free port; the server binds it right after
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child)
        # faulthandler: a crash in native code prints the Python stack that led to it
        env = {**os.environ, "ORDERSIGHT_STATE_CAPACITY": "65536", "PYTHONFAULTHANDLER": "1"}
        env.update(self.settings)
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--models", self.models]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        limit = self.file_size_limit
        self.proc = subprocess.Popen(
            cmd, env=env, stderr=subprocess.STDOUT,
            stdout=self._log if limit is None else subprocess.PIPE,  # the limit binds a file
            preexec_fn=None if limit is None else lambda: _limit_file_size(limit),
        )  # fmt: skip
        if limit is not None:
            threading.Thread(target=self._copy_output, daemon=True).start()
        # Fast reconnects, so readiness is seen soon after the port opens.
        opts = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=opts)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self.calls = {
            k: self.channel.unary_unary(m, request_serializer=None, response_deserializer=None)
            for k, m in METHOD.items()
        }
        if not self._wait_serving(START_TIMEOUT_S):
            rc = self.stop()
            raise RuntimeError(f"server not SERVING (exit code {rc}):\n{self.output()}")
        return self

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(1 << 16), b""):  # type: ignore[union-attr]
            with self._log_lock:
                self._log.seek(0, 2)
                self._log.write(chunk)
                self._log.flush()

    def _wait_serving(self, timeout: float) -> bool:
        """Poll the health service until SERVING (True), the process exits or `timeout` ends."""
        assert self.proc is not None
        deadline, req = time.monotonic() + timeout, health_pb2.HealthCheckRequest()
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:  # each check blocks up to 0.5 s waiting for the channel to connect
                if self._health.Check(req, timeout=0.5, wait_for_ready=True).status == SERVING:
                    return True
            except grpc.RpcError:
                pass
        return False

    def alive(self) -> bool:
        return self.proc is not None and self._wait_serving(RPC_TIMEOUT_S)

    def output(self, size: int = 4000) -> str:
        """The server's log: from a fatal error (faulthandler's stacks) on, else its tail."""
        with self._log_lock:
            self._log.seek(0)
            raw = self._log.read()
        text = re.sub(r"\nExtension modules: .*", "", raw.decode(errors="replace"))
        fatal = text.find("Fatal Python error")
        return text[fatal : fatal + size] if fatal >= 0 else text[-size:]

    def stop(self) -> int | None:
        self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a graceful stop
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return None if self.proc is None else self.proc.returncode

    def kill(self) -> None:
        """kill -9: no graceful stop, no final snapshot."""
        self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> ChildServer:
        self.stop()
        return self.start()

    def call(self, kind: str, request: bytes) -> tuple[grpc.StatusCode, str, bytes | None]:
        try:
            return grpc.StatusCode.OK, "", self.calls[kind](request, timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", None


# --- mutators: deterministic given the rng ------------------------------------------------

INTERESTING = (0x00, 0xFF, 0x7F, 0x80)
EXTREMES = [struct.pack("<q", v) for v in (-(2**63), 2**63 - 1, -1, 0, 2**31)]
EXTREMES += [struct.pack("<i", v) for v in (-(2**31), 2**31 - 1, -1)]
OVERLONG = (b"\xff" * 10 + b"\x01", b"\xff" * 15 + b"\x7f", b"\x80" * 9 + b"\0")  # varints
HUGE = (2**31 - 1, 2**31, 2**32 + 5, 2**63 - 1, 2**64 - 1)
GENERIC = ("flip", "byte", "insert", "delete", "truncate", "duplicate", "extreme")
PROTOBUF = GENERIC + ("varint", "length")  # over-long varints, huge length prefixes


def _limit_file_size(limit: int) -> None:
    """In the child before exec: files cannot grow past `limit` (Python ignores SIGXFSZ, so
    the write fails with EFBIG instead of killing the process)."""
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]  # kept: the test may lift the limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def mutate_once(rng: random.Random, d: bytearray, op: str) -> None:
    """Apply mutation `op` to `d` in place."""
    i = rng.randrange(len(d)) if d else 0
    if op in ("flip", "byte") and not d:
        pass
    elif op == "flip":
        d[i] ^= 1 << rng.randrange(8)
    elif op == "byte":
        d[i] = rng.choice(INTERESTING)
    elif op == "insert":
        n = rng.randint(1, 32)
        d[i:i] = rng.randbytes(n) if rng.random() < 0.5 else bytes([rng.choice(INTERESTING)]) * n
    elif op == "delete":
        del d[i : i + rng.randint(1, 32)]
    elif op == "truncate":
        del d[i:]
    elif op == "duplicate":
        j = rng.randrange(len(d)) if d else 0
        d[j:j] = d[i : i + rng.randint(1, 64)]
    elif op == "extreme":
        v = rng.choice(EXTREMES)
        d[i : i + len(v)] = v
    elif op == "varint":
        d[i:i] = rng.choice(OVERLONG)
    elif op == "length":  # a length-delimited field (wire type 2) claiming a huge length
        d[i:i] = varint(rng.randint(1, 15) << 3 | 2) + varint(rng.choice(HUGE))


def mutate(rng: random.Random, data: bytes, ops: tuple[str, ...] = GENERIC) -> bytes:
    """`data` with 1 to 4 stacked mutations."""
    d = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        mutate_once(rng, d, rng.choice(ops))
    return bytes(d)


# --- seed inputs -------------------------------------------------------------------------

LABELS = ("is_fraud", "label_known_at", "scenario")  # not order columns


def seed_orders(n: int = 48, seed: int = 5) -> pa.Table:
    """Simulated orders moved in time so the last lies one to two hours before now."""
    t = simulate(1, seed=seed, orders_per_day=n).slice(0, n)
    last = t.column("created_at").cast(pa.int64()).to_numpy().max()
    shift = ((int(time.time()) // 3600 - 1) * 3600) * 1_000_000 - int(last)
    for name in ("created_at", "account_created_at"):  # as int64, so nulls stay null
        col = t.column(name)
        moved = pc.add(col.cast(pa.int64()), pa.scalar(shift, pa.int64())).cast(col.type)
        t = t.set_column(t.schema.get_field_index(name), name, moved)
    return t.drop_columns([c for c in LABELS if c in t.schema.names])


SUB = {  # Order sub-message -> its columns; a field is named as its column less "<message>_"
    "customer": ("key_account", "email_domain"),
    "payment": ("payment_method", "card_bin", "card_fingerprint", "billing_country"),
    "shipping": ("shipping_country", "shipping_postal_code", "address_fingerprint"),
}
TOP = ("order_id", "customer_id", "amount_minor", "currency", "channel", "ip", "ip_country")
TOP += ("device_id", "note")


def to_order(r: dict) -> pb.Order:
    """A history-table row as a protobuf Order (nulls become unset fields)."""
    o = pb.Order(**{f: r[f] for f in TOP if r[f] is not None})
    for msg, cols in SUB.items():
        for col in (c for c in cols if r[c] is not None):
            setattr(getattr(o, msg), col.removeprefix(msg + "_"), r[col])
    o.created_at.FromDatetime(r["created_at"])
    if r["account_created_at"] is not None:
        o.customer.account_created_at.FromDatetime(r["account_created_at"])
    for it in r["items"] or []:
        o.items.add(**{k: v for k, v in it.items() if v is not None})
    return o


def arrow_stream(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=opts) as w:
        for b in table.to_batches(max_chunksize=4):  # several record batches per stream
            w.write_batch(b)
    return sink.getvalue().to_pybytes()


def seeds(kind: str) -> list[bytes]:
    """Unmutated inputs of `kind`: for batch_arrow the IPC streams (wrap them with `wrap`)."""
    t = seed_orders()
    orders = [to_order(r) for r in t.to_pylist()]
    if kind == "order":
        return [o.SerializeToString() for o in orders]
    if kind == "batch_orders":
        return [
            pb.ScoreBatchRequest(
                orders=pb.OrderList(orders=orders[i : i + 4]), arrow_response=i % 8 == 4
            ).SerializeToString()
            for i in range(0, len(orders), 4)
        ]
    return [
        arrow_stream(t.slice(i, 8), c)
        for i in range(0, t.num_rows, 8)
        for c in (None, "zstd", "lz4")
    ]


def batch_of(orders: list[bytes]) -> bytes:
    """ScoreBatchRequest{orders: OrderList{orders}} by hand: a mutated Order inside keeps
    valid enclosing lengths, so it reaches the server's Order decoder."""
    inner = b"".join(b"\x0a" + varint(len(o)) + o for o in orders)  # field 1, length-delimited
    return b"\x0a" + varint(len(inner)) + inner


def wrap(kind: str, data: bytes) -> bytes:
    """The request that carries `data`: batch_arrow's inside a valid ScoreBatchRequest."""
    if kind != "batch_arrow":
        return data
    return pb.ScoreBatchRequest(arrow_ipc=data).SerializeToString()


# --- campaigns ---------------------------------------------------------------------------


@dataclass
class Failure:
    kind: str
    case: int
    seed: int
    status: str
    details: str
    path: Path

    def __str__(self) -> str:
        where = f"{self.kind} case {self.case} (seed {self.seed})"
        return f"{where}: {self.status}: {self.details[:3000]}\n  request saved to {self.path}"


def run_campaign(
    server: ChildServer, kind: str, cases: int, seed: int, out: Path | None = None
) -> list[Failure]:
    """`cases` mutated requests of `kind`, and the failures among them, a crash first: the
    campaign stops at the case that killed (or hung) the server, and leaves it so."""
    env = os.environ.get("FUZZ_ARTIFACTS")
    out = Path(env) if env else out or Path(tempfile.mkdtemp(prefix="fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{kind}:{seed}")
    inputs, ops = seeds(kind), GENERIC if kind == "batch_arrow" else PROTOBUF
    failures: list[Failure] = []
    recent: list[tuple[int, bytes, grpc.StatusCode]] = []  # cases since the last check

    def save(case: int, request: bytes) -> Path:
        (path := out / f"{kind}-s{seed}-c{case}.bin").write_bytes(request)
        return path

    singles = seeds("order") if kind == "batch_orders" else []
    for case in range(cases):
        if singles and rng.random() < 0.5:  # half the batches: one mutated Order in valid ones
            batch = rng.sample(singles, 4)
            k = rng.randrange(4)
            batch[k] = mutate(rng, batch[k], ops)
            request = batch_of(batch)
        else:
            request = wrap(kind, mutate(rng, rng.choice(inputs), ops))
        code, details, _ = server.call(kind, request)
        recent.append((case, request, code))
        if code not in ACCEPTED:
            failures.append(Failure(kind, case, seed, code.name, details, save(case, request)))
        if code in ACCEPTED and (case + 1) % CHECK_EVERY and case < cases - 1:
            continue
        if not server.alive():  # the killer: the first recent unexpected status, else the last
            killer, request, code = next((r for r in recent if r[2] not in ACCEPTED), recent[-1])
            paths = [save(c, req) for c, req, _ in recent]  # all suspects, for replay
            rc = server.proc.poll() if server.proc else None
            sig = f" = {signal.Signals(-rc).name}" if rc is not None and rc < 0 else ""
            dead = f"CRASH (exit code {rc}{sig}" if rc is not None else "HANG (health unanswered"
            why = f"{dead}; the case got {code.name})"
            path = out / f"{kind}-s{seed}-c{killer}.bin"
            others = [p.name for p in paths if p != path]
            log = f"server log:\n{server.output()}" + (f"\nother suspects: {others}" * bool(others))
            crash = Failure(kind, killer, seed, why, log, path)
            return [crash] + [f for f in failures if f.case < killer]  # later: its aftermath
        recent.clear()
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzzing", description=__doc__)
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument("--cases", type=int, default=1000, help="cases per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="models/default")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--replay", type=Path, help="send one saved request, print its status")
    args = ap.parse_args(argv)
    if not (Path(args.models) / "manifest.json").exists():
        sys.exit(f"no models in {args.models} (`make models` creates models/default)")
    server = ChildServer(args.models).start()
    try:
        if args.replay:
            kind = args.replay.name.split("-s")[0]
            code, details, _ = server.call(kind, args.replay.read_bytes())
            alive = server.alive()
            print(f"{kind}: {code.name}: {details}; server alive: {alive}")
            if not alive:
                print(f"server exit code {server.proc.poll()}; log:\n{server.output()}")
            return 0 if code in ACCEPTED and alive else 1
        total, out = 0, Path(tempfile.mkdtemp(prefix="fuzz-"))  # unless $FUZZ_ARTIFACTS
        for kind in args.kinds.split(","):
            t0 = time.perf_counter()
            failures = run_campaign(server, kind, args.cases, args.seed, out)
            dt = time.perf_counter() - t0
            crashed = bool(failures) and failures[0].status.startswith(("CRASH", "HANG"))
            ran = failures[0].case + 1 if crashed else args.cases
            print(
                f"{kind}: {ran} cases{' (crashed)' * crashed}, {len(failures)} failures, {dt:.1f}s"
            )
            print("".join(f"  {f}\n" for f in failures[:5]), end="")
            total += len(failures)
            if not server.alive():
                server.restart()
        print(f"{'FAIL' if total else 'OK'}: {total} failures")
        return 1 if total else 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
