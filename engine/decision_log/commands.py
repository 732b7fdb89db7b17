"""`ordersight log tail|export|stats`: read a decision log folder (also while an engine
writes it: only whole batches are read, nothing is repaired)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.decision_log import segments
from engine.decision_log.records import KINDS
from engine.errors import InvalidInput


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("log", help="show, export or summarize a decision log folder")
    s.add_argument("action", choices=("tail", "export", "stats"))
    s.add_argument("--dir", help="the log folder (default: log_dir of --config)")
    s.add_argument("--config", help="TOML settings file whose log_dir to read")
    s.add_argument("-n", type=int, default=20, help="tail: rows to show (default 20)")
    s.add_argument("--kind", choices=KINDS, help="tail, export: only rows of this kind")
    s.add_argument("--to", help="export: the Parquet file to write (.parquet)")
    s.add_argument("--since", help="export: rows logged at or after, ISO 8601 (UTC if no zone)")
    s.add_argument("--until", help="export: rows logged before, ISO 8601")
    s.set_defaults(func=run)


def _folder(args: argparse.Namespace) -> Path:
    if args.dir:
        folder = Path(args.dir)
    else:
        from engine.config import load_settings

        log_dir = load_settings(args.config).log_dir
        if not log_dir:
            raise InvalidInput("--dir: no log folder given, and the settings have no log_dir")
        folder = Path(log_dir)
    if not folder.is_dir():
        raise InvalidInput(f"--dir: {folder} is not a folder", "--dir")
    return folder


def _when(text: str | None, flag: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput(f"{flag}: {text!r} is not an ISO 8601 time ({exc})", flag) from exc
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _filtered(
    folder: Path, kind: str | None, since: dt.datetime | None, until: dt.datetime | None
) -> Iterator[pa.RecordBatch]:
    for batch in segments.read_folder(folder):
        mask = None
        if kind is not None:
            mask = pc.equal(batch.column("kind"), kind)
        for bound, op in ((since, pc.greater_equal), (until, pc.less)):
            if bound is not None:
                at = pa.scalar(bound, batch.schema.field("logged_at").type)
                m = op(batch.column("logged_at"), at)
                mask = m if mask is None else pc.and_(mask, m)
        yield batch if mask is None else batch.filter(mask)


def run(args: argparse.Namespace) -> int:
    folder = _folder(args)
    if args.action == "stats":
        return _stats(folder)
    if args.action == "tail":
        return _tail(folder, args.n, args.kind)
    if not args.to:
        raise InvalidInput("--to: export needs the Parquet file to write", "--to")
    if Path(args.to).suffix != ".parquet":
        raise InvalidInput(f"--to: {args.to} must end in .parquet (export writes Parquet)", "--to")
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    rows = 0
    writer = None
    try:
        for batch in _filtered(folder, args.kind, since, until):
            if writer is None:
                writer = pq.ParquetWriter(args.to, batch.schema)
            writer.write_batch(batch)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise InvalidInput(f"--dir: {folder} holds no log segments", "--dir")
    print(f"{rows:,} rows written to {args.to}")
    return 0


def _tail(folder: Path, n: int, kind: str | None) -> int:
    if n < 1:
        raise InvalidInput(f"-n: must be >= 1, is {n}", "-n")
    last: list[dict] = []
    for batch in _filtered(folder, kind, None, None):
        last = (last + batch.slice(max(batch.num_rows - n, 0)).to_pylist())[-n:]
    for r in last:
        when = r["logged_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if r["kind"] in ("decision", "challenger"):
            codes = ",".join(x["code"] for x in r["reasons"]) or "-"
            score = "-" if r["score"] is None else f"{r['score']:.4f}"  # a failed decide
            what = (
                f"{r['order_id']} {r['action']} {score} {r['path']} "
                f"{r['model_version']} reasons={codes}"
            )
        elif r["kind"] == "outcome":
            what = f"{r['order_id']} {'fraud' if r['is_fraud'] else 'legitimate'}"
        else:
            what = f"{r['channel']} {r['code']}"
        print(f"{r['seq']:>8} {when} {r['kind']:<10} {what}")
    return 0


def _stats(folder: Path) -> int:
    paths = segments.segments(folder)
    if not paths:
        print(f"{folder}: no segments")
        return 0
    kinds: Counter[str] = Counter()
    first = last = None
    size = 0
    for path in paths:
        s = segments.scan(path)
        size += s.size
        state = "torn: " + s.error if s.torn else "whole"
        print(f"{path.name}  {s.size:>12,} bytes  {s.rows:>10,} rows  {state}")
    for batch in segments.read_folder(folder):
        kinds.update(batch.column("kind").to_pylist())
        if batch.num_rows:
            mm = pc.min_max(batch.column("logged_at"))
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
    print(f"{len(paths)} segments, {size:,} bytes")
    print("rows: " + ", ".join(f"{k} {kinds[k]:,}" for k in KINDS))
    if first is not None:
        print(f"logged from {first:%Y-%m-%dT%H:%M:%SZ} to {last:%Y-%m-%dT%H:%M:%SZ}")
    return 0
