"""Cost of the server's codecs against the protobuf route, side by side in one process.

`python -m benchmarks.codecs` prints µs per order / per decision at several batch sizes:

- decode: `pb.Order.FromString` alone (parsing, no checks, no arrays) against the engine's
  codec (the wire decoder, the rule table's validator and the encoder) on the same orders;
- phases: the order codec's two passes (to columns; validation and encoding) per order, for
  serialized orders and for an Arrow table, written to benchmarks/results/codecs.md;
- encode: protobuf objects (tests/oracle.py `decisions_to_pb`) + `SerializeToString` (per
  Decision, and as one ScoreBatchResponse) against `engine.codec.decision_encoder`, over
  plain approvals, flagged decisions (reasons and triggers) and the simulated mix.

Each figure is the best of many short runs (the machine's cores are shared). Decisions come
from models/default when it loads (`make models`), else from small models trained here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from ordersight.v1 import risk_pb2 as pb

from engine.codec import decision_encoder
from engine.codec.arrow_orders import conform, decode_table, to_columns
from engine.codec.order_decoder import decode_orders
from engine.codec.order_messages import orders_from_table
from engine.decision.cascade import Engine
from engine.decision.decisions import Decisions
from engine.decision.policy import APPROVE
from engine.errors import ModelLoadError
from engine.features.velocity import VelocityState
from engine.models import artifacts
from engine.orders.batch import OrderRules
from tests.oracle import decisions_to_pb
from training.simulate import simulate
from training.train import train

LATEST = 1_800_000_000.0  # created_at bound, after every simulated order


def _best_us(fn: Callable[[], object], n: int, budget: int, rounds: int) -> float:
    """µs per item of `fn`, which handles `n` items: the best of `rounds` short runs."""
    reps = max(1, budget // n)
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps / n)
    return best * 1e6


def decode() -> None:
    orders = orders_from_table(simulate(3, seed=5, orders_per_day=1500).slice(0, 4096))
    raws = [o.SerializeToString() for o in orders]
    rules = OrderRules()

    def protobuf_route(batch: list[bytes]) -> None:  # parsing alone: no checks, no arrays
        [pb.Order.FromString(x) for x in batch]

    def codec(batch: list[bytes]) -> None:
        rules.check(decode_orders(batch), LATEST)

    print(f"decode: mean Order {sum(map(len, raws)) / len(raws):.0f} bytes; µs per order")
    print(f"{'batch':>6} {'protobuf':>9} {'wire':>6}")
    for n in (1, 64, 4096):
        raw = raws[:n]
        a = _best_us(lambda r=raw: protobuf_route(r), n, 8_000, 15)
        b = _best_us(lambda r=raw: codec(r), n, 8_000, 15)
        print(f"{n:>6} {a:>9.2f} {b:>6.2f}")


def _decisions() -> Decisions:
    history = simulate(70, seed=5, orders_per_day=1500)
    try:
        models = artifacts.load(Path("models/default"))
    except ModelLoadError:
        tmp = Path(tempfile.mkdtemp())
        pq.write_table(simulate(21, seed=11, orders_per_day=1500), tmp / "orders.parquet")
        train(tmp / "orders.parquet", tmp / "m", capacity=1 << 16, progress=False, max_rounds=150)
        models = artifacts.load(tmp / "m")
    return Engine(models, VelocityState(1 << 20)).score(decode_table(history.slice(0, 100_000)))


def encode() -> None:
    d = _decisions()
    decision_encoder.warm()
    approved = np.flatnonzero(d.action == APPROVE)
    flagged = np.flatnonzero(d.action != APPROVE)
    print(f"encode: {len(d)} decisions, {flagged.size} flagged; µs per decision")
    print(f"{'rows':>9} {'batch':>6} {'pb Decision':>12} {'bytes':>6} {'pb Batch':>9} {'bytes':>6}")
    for name, pool in (("approved", approved), ("flagged", flagged), ("mixed", np.arange(len(d)))):
        for n in (1, 8, 100_000):
            part = d.take(pool[:n].tolist())
            n = len(part)
            lat = [1391] * n
            rounds = 5 if n > 1000 else 15

            def per_decision(p: Decisions = part, t: list[int] = lat) -> object:
                return [m.SerializeToString() for m in decisions_to_pb(p, t)]

            def as_batch(p: Decisions = part, t: list[int] = lat) -> object:
                return pb.ScoreBatchResponse(decisions=decisions_to_pb(p, t)).SerializeToString()

            a = _best_us(per_decision, n, 20_000, rounds)
            b = _best_us(
                lambda p=part, t=lat: decision_encoder.decision_bytes(p, t), n, 20_000, rounds
            )
            c = _best_us(as_batch, n, 20_000, rounds)
            e = _best_us(
                lambda p=part, t=lat: decision_encoder.batch_response_bytes(p, t), n, 20_000, rounds
            )
            print(f"{name:>9} {n:>6} {a:>12.2f} {b:>6.2f} {c:>9.2f} {e:>6.2f}")


def phases() -> list[str]:
    """ns per order of each phase of the order codec, for serialized orders (parse, then
    validation and encoding) and for an Arrow table (to columns, then the same check): the
    rows of benchmarks/results/codecs.md."""
    table = simulate(14, seed=5, orders_per_day=1500)
    orders = table.drop_columns(
        [c for c in ("is_fraud", "label_known_at", "scenario") if c in table.column_names]
    )
    raws = [o.SerializeToString() for o in orders_from_table(orders)]
    rules = OrderRules()
    rules.check(decode_orders(raws[:2]), LATEST)
    lines = [
        "| source | orders | to columns | validate + encode | total |",
        "|---|---|---|---|---|",
    ]
    for n in (1, 64, 4096, len(raws)):
        raw = raws[:n]
        cols = decode_orders(raw)
        rounds = 15 if n < 10_000 else 5
        a = _best_us(lambda r=raw: decode_orders(r), n, 8_000, rounds) * 1e3
        b = _best_us(lambda c=cols: rules.check(c, LATEST), n, 8_000, rounds) * 1e3
        lines.append(f"| serialized Order | {n:,} | {a:,.0f} | {b:,.0f} | {a + b:,.0f} |")
    arrow = conform(orders)
    for n in (4096, arrow.num_rows):
        part = arrow.slice(0, n)
        cols = to_columns(part)
        a = _best_us(lambda t=part: to_columns(t), n, 8_000, 5) * 1e3
        b = _best_us(lambda c=cols: rules.check(c, LATEST), n, 8_000, 5) * 1e3
        lines.append(f"| Arrow table | {n:,} | {a:,.0f} | {b:,.0f} | {a + b:,.0f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "codecs.md"))
    args = p.parse_args()
    decode()
    encode()
    lines = phases()
    print("\n".join(lines))
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    Path(args.out).write_text(
        "# The order codec, phase by phase (ns per order)\n\n"
        f"Command: `python -m benchmarks.codecs` on {when}; best of several short runs on this "
        "machine's shared cores; the orders are simulated (14 days, seed 5).\n\n"
        + "\n".join(lines)
        + "\n"
    )


if __name__ == "__main__":
    main()
