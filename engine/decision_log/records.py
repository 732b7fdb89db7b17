"""What the decision log holds: one Arrow schema, a row per decision, outcome or event.

A row is what an auditor needs to see why an order was decided as it was (the order's key
facts, the feature vector, score, action, path, reasons, triggers, the model versions, the
latency) and what a restart needs to rebuild the state exactly (`replay`: the encoded
order's values, `engine.orders.arrays.OrderArrays`, which is all the velocity kernels read).

Kinds: `decision` (the champion's; it changed the velocity state), `challenger` (the same
order decided in shadow; `seq` is the champion row's, so the two join on seq and order_id;
no features, no reasons), `outcome` (a reported outcome, applied to the state), `event` (a
checkout error event, counted by the anomaly detector).

`seq` orders the changes of state: every decision, outcome and event entry takes the next
number when it is applied, and a snapshot records the last number it holds, so a replay
applies exactly the entries after it.

The engine hands the writer `Entry` values (numpy arrays and lists it owns); the writer turns
a group of them into one record batch (`to_batch`), so a group commit builds Arrow once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from engine.codec.decision_table import REASON, lists
from engine.decision.decisions import Decisions
from engine.decision.policy import ACTION_NAMES, PATH_NAMES
from engine.features.matrix import FEATURE_NAMES, N_FEATURES
from engine.orders.arrays import OrderArrays
from engine.orders.columns import OrderColumns
from engine.orders.schema import ENTITY_KINDS, STRING_SLOT

FORMAT = 1
DECISION, CHALLENGER, OUTCOME, EVENT = range(4)
KINDS = ("decision", "challenger", "outcome", "event")
STATE_KINDS = (DECISION, OUTCOME)
"""Kinds a replay applies to the velocity state (the anomaly detector reads decisions and
events)."""

_TS = pa.timestamp("us", tz="UTC")
_NAMES = [f.name for f in fields(OrderArrays) if f.name != "n"]


def _replay_type() -> pa.StructType:
    out = []
    for name in _NAMES:
        if name == "keys":
            out.append(pa.field(name, pa.list_(pa.uint64(), len(ENTITY_KINDS))))
        elif name == "key_account":
            out.append(pa.field(name, pa.bool_()))
        elif name in ("billing_country", "shipping_country", "ip_country"):
            out.append(pa.field(name, pa.uint64()))
        elif name == "amount_minor":
            out.append(pa.field(name, pa.int64()))
        else:
            out.append(pa.field(name, pa.float64()))
    out.append(pa.field("known_at_s", pa.float64()))  # outcomes: when the label was known
    return pa.struct(out)


_REPLAY = _replay_type()
SCHEMA = pa.schema(
    [
        ("seq", pa.uint64()),
        ("kind", pa.string()),
        ("logged_at", _TS),
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("created_at", _TS),
        ("amount_minor", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("channel", pa.string()),
        ("features", pa.list_(pa.float64(), N_FEATURES)),
        ("score", pa.float64()),
        ("raw_score", pa.float64()),
        ("base_value", pa.float64()),
        ("action", pa.string()),
        ("path", pa.string()),
        ("reasons", pa.list_(REASON)),
        ("review_triggers", pa.list_(pa.string())),
        ("fallback_cause", pa.string()),
        ("model_version", pa.string()),
        ("champion_version", pa.string()),
        ("challenger_version", pa.string()),
        ("latency_us", pa.int64()),
        ("is_fraud", pa.bool_()),
        ("known_at", _TS),
        ("code", pa.string()),
        ("replay", _REPLAY),
    ],
    metadata={
        "ordersight.format": str(FORMAT),
        "ordersight.features": json.dumps(list(FEATURE_NAMES)),
        "ordersight.entity_kinds": json.dumps(list(ENTITY_KINDS)),
    },
)
_KIND_VALUES = pa.array(KINDS)
_ACTION_VALUES = pa.array(["ACTION_UNSPECIFIED", *(ACTION_NAMES[k] for k in (1, 2, 3))])
_PATH_VALUES = pa.array(["PATH_UNSPECIFIED", *(PATH_NAMES[k] for k in (1, 2, 3))])


def texts(cols: OrderColumns, column: str, rows: np.ndarray | None) -> pa.Array:
    """One string field of the given rows (all when None) as an Arrow array, gathered from
    the columns' byte buffer without a Python loop (a copy: the buffer may be reused)."""
    spans = cols.spans[STRING_SLOT[column]]
    lo, hi = (spans[0], spans[1]) if rows is None else (spans[0, rows], spans[1, rows])
    lengths = hi - lo
    offsets = np.zeros(lengths.size + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    data = cols.buf[idx] if idx.size else np.zeros(0, np.uint8)
    return pa.StringArray.from_buffers(lengths.size, pa.py_buffer(offsets), pa.py_buffer(data))


@dataclass(slots=True)
class Entry:
    """One micro-batch's (or ScoreBatch chunk's, outcome report's, event report's) rows."""

    kind: int
    seq: int
    ids: list[str]
    t: np.ndarray  # float64 event seconds (created_at; an event's time)
    channels: list[str | None]
    arrays: OrderArrays | None = None  # decisions and outcomes
    customer: pa.Array | None = None
    currency: pa.Array | None = None
    X: np.ndarray | None = None  # champion decisions
    decisions: Decisions | None = None  # decision and challenger rows
    latency_us: np.ndarray | None = None
    champion: str = ""
    challenger: str | None = None
    is_fraud: np.ndarray | None = None  # outcomes
    known_at: np.ndarray | None = None  # outcomes: float64 seconds
    codes: list[str] | None = None  # events
    logged_at: float = field(default_factory=time.time)

    @property
    def n(self) -> int:
        return len(self.t)


def _us(seconds: np.ndarray | float) -> np.ndarray:
    return np.round(np.asarray(seconds, np.float64) * 1e6).astype(np.int64)


def _cat(parts: list[np.ndarray | None], ns: list[int], dtype: Any, fill: Any = 0) -> tuple:
    """Concatenated values and a null mask (True = null) of parts some of which are absent."""
    values = [np.full(n, fill, dtype) if p is None else np.asarray(p, dtype) for p, n in
              zip(parts, ns, strict=True)]  # fmt: skip
    mask = np.concatenate([np.full(n, p is None) for p, n in zip(parts, ns, strict=True)])
    return np.concatenate(values), mask


def _num(parts: list[np.ndarray | None], ns: list[int], dtype: Any, typ: pa.DataType) -> pa.Array:
    values, mask = _cat(parts, ns, dtype)
    return pa.array(values, typ, mask=mask if mask.any() else None)


def _strings(parts: list[pa.Array | None], ns: list[int]) -> pa.Array:
    arrays = [pa.nulls(n, pa.string()) if p is None else p for p, n in zip(parts, ns, strict=True)]
    return pa.concat_arrays(arrays) if len(arrays) != 1 else arrays[0]


def _names(codes: np.ndarray, mask: np.ndarray | None, values: pa.Array) -> pa.Array:
    """Names of small codes (plain strings: a segment holds no dictionary messages)."""
    return values.take(pa.array(codes.astype(np.int8), pa.int8(), mask=mask))


def to_batch(entries: list[Entry]) -> pa.RecordBatch:
    """One record batch of the entries' rows, in order."""
    ns = [e.n for e in entries]
    total = sum(ns)
    ds = [e.decisions for e in entries]

    def per_row(get: Any) -> list[Any]:
        return [v for e, n in zip(entries, ns, strict=True) for v in get(e, n)]

    seq = np.concatenate([np.full(n, e.seq, np.uint64) for e, n in zip(entries, ns, strict=True)])
    kind = np.concatenate([np.full(n, e.kind, np.int8) for e, n in zip(entries, ns, strict=True)])
    logged = np.concatenate(
        [np.full(n, _us(e.logged_at)) for e, n in zip(entries, ns, strict=True)]
    )
    arrays = [e.arrays for e in entries]
    features = [e.X.reshape(-1) if e.X is not None else None for e in entries]
    flat, fmask = _cat(features, [n * N_FEATURES for n in ns], np.float64)
    row_null = np.concatenate([np.full(n, e.X is None) for e, n in zip(entries, ns, strict=True)])
    action, amask = _cat([None if d is None else d.action for d in ds], ns, np.int8)
    path, pmask = _cat([None if d is None else d.path for d in ds], ns, np.int8)
    reasons = per_row(lambda e, n: e.decisions.reasons if e.decisions else [[]] * n)
    triggers = per_row(lambda e, n: e.decisions.triggers if e.decisions else [[]] * n)
    flat_reasons = [r for rs in reasons for r in rs]
    reason_values = pa.StructArray.from_arrays(
        [
            pa.array([r.code for r in flat_reasons], pa.string()),
            pa.array([r.feature for r in flat_reasons], pa.string()),
            pa.array([r.contribution for r in flat_reasons], pa.float64()),
            pa.array([r.message for r in flat_reasons], pa.string()),
        ],
        fields=list(REASON),
    )
    columns = {
        "seq": pa.array(seq, pa.uint64()),
        "kind": _names(kind, None, _KIND_VALUES),
        "logged_at": pa.array(logged, _TS),
        "order_id": pa.array(per_row(lambda e, n: e.ids), pa.string()),
        "customer_id": _strings([e.customer for e in entries], ns),
        "created_at": pa.array(np.concatenate([_us(e.t) for e in entries]), _TS),
        "amount_minor": _num(
            [None if a is None else a.amount_minor for a in arrays], ns, np.int64, pa.int64()
        ),
        "amount": _num(
            [None if a is None else a.amount for a in arrays], ns, np.float64, pa.float64()
        ),
        "currency": _strings([e.currency for e in entries], ns),
        "channel": pa.array(per_row(lambda e, n: e.channels), pa.string()),
        "features": pa.FixedSizeListArray.from_arrays(
            pa.array(flat, pa.float64()), N_FEATURES, mask=pa.array(row_null)
        )
        if fmask.any()
        else pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float64()), N_FEATURES),
        "score": _num([None if d is None else d.score for d in ds], ns, np.float64, pa.float64()),
        "raw_score": _num([None if d is None else d.raw for d in ds], ns, np.float64, pa.float64()),
        "base_value": _num(
            [None if d is None else d.base for d in ds], ns, np.float64, pa.float64()
        ),
        "action": _names(action, amask if amask.any() else None, _ACTION_VALUES),
        "path": _names(path, pmask if pmask.any() else None, _PATH_VALUES),
        "reasons": lists(reasons, reason_values),
        "review_triggers": lists(
            triggers, pa.array([t for ts in triggers for t in ts], pa.string())
        ),
        "fallback_cause": pa.array(
            per_row(lambda e, n: e.decisions.causes if e.decisions else [None] * n), pa.string()
        ),
        "model_version": pa.array(
            per_row(lambda e, n: [e.decisions.model_version if e.decisions else None] * n),
            pa.string(),
        ),
        "champion_version": pa.array(per_row(lambda e, n: [e.champion or None] * n), pa.string()),
        "challenger_version": pa.array(per_row(lambda e, n: [e.challenger] * n), pa.string()),
        "latency_us": _num([e.latency_us for e in entries], ns, np.int64, pa.int64()),
        "is_fraud": _num([e.is_fraud for e in entries], ns, np.bool_, pa.bool_()),
        "known_at": _num(
            [None if e.known_at is None else _us(e.known_at) for e in entries], ns, np.int64, _TS
        ),
        "code": pa.array(per_row(lambda e, n: e.codes or [None] * n), pa.string()),
        "replay": _replay(entries, ns),
    }
    assert len(columns["seq"]) == total
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=SCHEMA)


def _replay(entries: list[Entry], ns: list[int]) -> pa.StructArray:
    """The encoded orders' values (zeros where an entry has none: events carry only `t`)."""
    out = []
    for name, f in zip(_NAMES, _REPLAY, strict=False):
        if name == "t":
            out.append(pa.array(np.concatenate([e.t for e in entries]), pa.float64()))
            continue
        parts = [None if e.arrays is None else getattr(e.arrays, name) for e in entries]
        if name == "keys":
            keys = [np.zeros((n, len(ENTITY_KINDS)), np.uint64) if p is None else p
                    for p, n in zip(parts, ns, strict=True)]  # fmt: skip
            flat = np.ascontiguousarray(np.concatenate(keys)).reshape(-1)
            out.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), len(ENTITY_KINDS)))
            continue
        dtype = f.type.to_pandas_dtype()
        values, _ = _cat(parts, ns, dtype)
        out.append(pa.array(values, f.type))
    known, _ = _cat([e.known_at for e in entries], ns, np.float64, np.nan)
    out.append(pa.array(known, pa.float64()))
    return pa.StructArray.from_arrays(out, fields=list(_REPLAY))


def replay_arrays(replay: pa.StructArray) -> tuple[OrderArrays, np.ndarray]:
    """The encoded orders of logged rows (a `replay` column slice), and their known_at_s."""
    kw: dict[str, np.ndarray] = {}
    for name in _NAMES:
        col = replay.field(name)
        if name == "keys":
            flat = col.values.to_numpy(zero_copy_only=False)
            kw[name] = np.ascontiguousarray(flat.reshape(len(col), len(ENTITY_KINDS)))
        else:
            kw[name] = np.ascontiguousarray(col.to_numpy(zero_copy_only=False))
    known = replay.field("known_at_s").to_numpy(zero_copy_only=False)
    return OrderArrays(n=len(replay), **kw), known
