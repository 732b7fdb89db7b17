"""What the decision log holds: one Arrow schema, a row per decision, outcome or event.

A row is what an auditor needs to see why an order was decided as it was (the order's key
facts, the feature vector, score, action, path, reasons, triggers, the model versions, the
latency) and what a restart needs to rebuild the state exactly (`replay`: the encoded
order's values, `engine.orders.arrays.OrderArrays`, which is all the velocity kernels read).
Personal fields are not in it in clear: the replay record holds entity keys, keyed hashes
under the configured secret (the folder's `key.id` names the key, `segments.claim_key`).
`order_id` and `customer_id` (an account id, needed to audit a decision) are in clear.

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

from engine.codec.decision_table import REASON, lists, reason_values
from engine.decision.decisions import Decisions
from engine.decision.policy import ACTION_NAMES, PATH_NAMES
from engine.features.matrix import FEATURE_NAMES, N_FEATURES
from engine.orders.arrays import OrderArrays
from engine.orders.columns import OrderColumns
from engine.orders.schema import ENTITY_KINDS, STRING_SLOT

FORMAT = 2  # 2: entity keys are keyed SipHash (engine.orders.hashing), no longer FNV
DECISION, CHALLENGER, OUTCOME, EVENT = range(4)
KINDS = ("decision", "challenger", "outcome", "event")

_TS = pa.timestamp("us", tz="UTC")
_NAMES = [f.name for f in fields(OrderArrays) if f.name != "n"]
_INTS = {"amount_minor": "<i8", "key_account": "?", "keys": ("<u8", (len(ENTITY_KINDS),))}
_INTS.update({c: "<u8" for c in ("billing_country", "shipping_country", "ip_country")})
REPLAY = np.dtype([(n, _INTS.get(n, "<f8")) for n in _NAMES] + [("known_at_s", "<f8")])
"""One packed record per row: the encoded order's values (`OrderArrays`, all the velocity
kernels read) and an outcome's known_at, exactly as the engine applied them. Packed, so a
group costs one Arrow column instead of a dozen; its layout is in the schema metadata."""

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
        ("replay", pa.binary(REPLAY.itemsize)),
    ],
    metadata={
        "ordersight.replay": json.dumps(REPLAY.descr),
        "ordersight.format": str(FORMAT),
        "ordersight.features": json.dumps(list(FEATURE_NAMES)),
        "ordersight.entity_kinds": json.dumps(list(ENTITY_KINDS)),
    },
)
_KIND_VALUES = pa.array(KINDS)
_ACTION_VALUES = pa.array(["ACTION_UNSPECIFIED", *(ACTION_NAMES[k] for k in (1, 2, 3))])
_PATH_VALUES = pa.array(["PATH_UNSPECIFIED", *(PATH_NAMES[k] for k in (1, 2, 3))])


Texts = tuple[np.ndarray, np.ndarray]  # int32 offsets (n + 1), uint8 UTF-8 data


def texts(cols: OrderColumns, column: str, rows: np.ndarray | None) -> Texts:
    """One string field of the given rows (all when None): offsets and bytes, gathered from
    the columns' buffer without a Python loop (a copy: the buffer may be reused)."""
    spans = cols.spans[STRING_SLOT[column]]
    lo, hi = (spans[0], spans[1]) if rows is None else (spans[0, rows], spans[1, rows])
    lengths = hi - lo
    offsets = np.zeros(lengths.size + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if lengths.size == 1:
        return offsets, cols.buf[lo[0] : hi[0]].copy()
    idx = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    return offsets, cols.buf[idx]


def _strings(parts: list[Texts | None], ns: list[int]) -> pa.Array:
    """One string column from per-entry (offsets, bytes), null where an entry has none."""
    if all(p is None for p in parts):
        return pa.nulls(sum(ns), pa.string())
    offsets, data, valid, base = [np.zeros(1, np.int32)], [], [], 0
    for p, n in zip(parts, ns, strict=True):
        if p is None:
            offsets.append(np.full(n, base, np.int32))
            valid.append(np.zeros(n, np.bool_))
        else:
            offsets.append(p[0][1:] + base)
            data.append(p[1])
            base += int(p[0][-1])
            valid.append(np.ones(n, np.bool_))
    mask = np.concatenate(valid)
    bitmap = None if mask.all() else pa.py_buffer(np.packbits(mask, bitorder="little"))
    return pa.StringArray.from_buffers(
        int(mask.size), pa.py_buffer(np.concatenate(offsets)),
        pa.py_buffer(np.concatenate(data) if data else np.zeros(0, np.uint8)), bitmap,
    )  # fmt: skip


@dataclass(slots=True)
class Entry:
    """One micro-batch's (or ScoreBatch chunk's, outcome report's, event report's) rows."""

    kind: int
    seq: int
    ids: list[str]
    t: np.ndarray  # float64 event seconds (created_at; an event's time)
    channels: list[str | None]
    arrays: OrderArrays | None = None  # decisions and outcomes
    customer: Texts | None = None
    currency: Texts | None = None
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


def _num(parts: list[Any], ns: list[int], dtype: Any, typ: pa.DataType) -> pa.Array:
    """One column from per-entry arrays, null where an entry has none."""
    if all(p is not None for p in parts):
        values = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return pa.array(np.asarray(values, dtype), typ)
    if all(p is None for p in parts):
        return pa.nulls(sum(ns), typ)
    values = np.concatenate(
        [
            np.zeros(n, dtype) if p is None else np.asarray(p, dtype)
            for p, n in zip(parts, ns, strict=True)
        ]
    )
    mask = np.concatenate([np.full(n, p is None) for p, n in zip(parts, ns, strict=True)])
    return pa.array(values, typ, mask=mask)


def _per_row(values: list[Any], ns: list[int], typ: pa.DataType) -> pa.Array:
    """A column holding one value per entry, repeated over its rows."""
    if len(values) == 1:
        return (
            pa.repeat(pa.scalar(values[0], typ), ns[0])
            if values[0] is not None
            else pa.nulls(ns[0], typ)
        )
    return pa.array([v for v, n in zip(values, ns, strict=True) for _ in range(n)], typ)


def _names(codes: np.ndarray | pa.Array, values: pa.Array) -> pa.Array:
    """Names of small codes (plain strings: a segment holds no dictionary messages)."""
    return values.take(codes if isinstance(codes, pa.Array) else pa.array(codes, pa.int8()))


def _lists_of(rows: list[list[Any]], values: pa.Array, typ: pa.DataType) -> pa.Array:
    if not len(values):  # no row has any (approved orders): all empty lists
        offsets = np.zeros(len(rows) + 1, np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array([], typ))
    return lists(rows, values)


def to_batch(entries: list[Entry]) -> pa.RecordBatch:
    """One record batch of the entries' rows, in order."""
    ns = [e.n for e in entries]
    ds = [e.decisions for e in entries]
    arrays = [e.arrays for e in entries]
    count = np.array(ns)
    flat_ids = [i for e in entries for i in e.ids]
    channels = [c for e in entries for c in e.channels]
    reasons: list[list[Any]] = []
    triggers: list[list[str]] = []
    causes: list[str | None] = []
    for d, n in zip(ds, ns, strict=True):
        if d is None:
            reasons += [[]] * n
            triggers += [[]] * n
            causes += [None] * n
        else:
            reasons += d.reasons
            triggers += d.triggers
            causes += d.causes
    flat_triggers = pa.array([t for ts in triggers for t in ts], pa.string())
    features = [None if e.X is None else e.X.reshape(-1) for e in entries]
    feature_values = _num(features, [n * N_FEATURES for n in ns], np.float64, pa.float64())
    features_null = np.concatenate(
        [np.full(n, e.X is None) for e, n in zip(entries, ns, strict=True)]
    )
    action = _num([None if d is None else d.action for d in ds], ns, np.int8, pa.int8())
    path = _num([None if d is None else d.path for d in ds], ns, np.int8, pa.int8())
    columns = [
        pa.array(np.repeat(np.array([e.seq for e in entries], np.uint64), count), pa.uint64()),
        _names(np.repeat(np.array([e.kind for e in entries], np.int8), count), _KIND_VALUES),
        pa.array(np.repeat(_us(np.array([e.logged_at for e in entries])), count), _TS),
        pa.array(flat_ids, pa.string()),
        _strings([e.customer for e in entries], ns),
        pa.array(_us(np.concatenate([e.t for e in entries])), _TS),
        _num([None if a is None else a.amount_minor for a in arrays], ns, np.int64, pa.int64()),
        _num([None if a is None else a.amount for a in arrays], ns, np.float64, pa.float64()),
        _strings([e.currency for e in entries], ns),
        pa.array(channels, pa.string()),
        pa.FixedSizeListArray.from_arrays(
            feature_values.fill_null(0.0), N_FEATURES,
            mask=pa.array(features_null) if features_null.any() else None,
        ),
        _num([None if d is None else d.score for d in ds], ns, np.float64, pa.float64()),
        _num([None if d is None else d.raw for d in ds], ns, np.float64, pa.float64()),
        _num([None if d is None else d.base for d in ds], ns, np.float64, pa.float64()),
        _names(action, _ACTION_VALUES),
        _names(path, _PATH_VALUES),
        _lists_of(reasons, reason_values(reasons), REASON),
        _lists_of(triggers, flat_triggers, pa.string()),
        pa.array(causes, pa.string()),
        _per_row([None if d is None else d.model_version for d in ds], ns, pa.string()),
        _per_row([e.champion or None for e in entries], ns, pa.string()),
        _per_row([e.challenger for e in entries], ns, pa.string()),
        _num([e.latency_us for e in entries], ns, np.int64, pa.int64()),
        _num([e.is_fraud for e in entries], ns, np.bool_, pa.bool_()),
        _num([None if e.known_at is None else _us(e.known_at) for e in entries], ns, np.int64, _TS),
        pa.array([c for e, n in zip(entries, ns, strict=True) for c in _codes(e, n)], pa.string()),
        _replay(entries, ns),
    ]  # fmt: skip
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _codes(e: Entry, n: int) -> list[str | None]:
    return list(e.codes) if e.codes is not None else [None] * n


def _replay(entries: list[Entry], ns: list[int]) -> pa.Array:
    """The packed replay records (zeros where an entry has no encoded orders: an event
    carries only its time)."""
    rec = np.zeros(sum(ns), REPLAY)
    lo = 0
    for e, n in zip(entries, ns, strict=True):
        part = rec[lo : lo + n]
        part["t"] = e.t
        if e.arrays is not None:
            for name in _NAMES:
                part[name] = getattr(e.arrays, name)
        part["known_at_s"] = np.nan if e.known_at is None else e.known_at
        lo += n
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(REPLAY.itemsize), rec.size, [None, pa.py_buffer(rec)]
    )


def replay_arrays(replay: pa.Array) -> tuple[OrderArrays, np.ndarray]:
    """The encoded orders of logged rows (a `replay` column, or a slice of it), and their
    known_at_s."""
    data = replay.buffers()[1]
    rec = np.frombuffer(data, REPLAY, count=len(replay), offset=replay.offset * REPLAY.itemsize)
    kw = {name: np.ascontiguousarray(rec[name]) for name in _NAMES}
    return OrderArrays(n=len(replay), **kw), np.ascontiguousarray(rec["known_at_s"])
