"""Decisions as an Arrow table (the Decision fields as columns, a row per decision) and as an
Arrow IPC stream: ScoreBatch's `arrow_response` answer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from engine.decision.decisions import Decisions

_ACTIONS = pa.array(["ACTION_UNSPECIFIED", "APPROVE", "REVIEW", "DECLINE"])
_PATHS = pa.array(["PATH_UNSPECIFIED", "SCREENED_OUT", "MODEL", "FALLBACK"])
REASON = pa.struct(
    [
        ("code", pa.string()),
        ("feature", pa.string()),
        ("contribution", pa.float64()),
        ("message", pa.string()),
    ]
)


def lists(rows: list[list[Any]], values: pa.Array) -> pa.Array:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def reason_values(rows: list[list[Any]]) -> pa.StructArray:
    """Every row's reasons, flattened, as REASON structs (the values of a reasons list)."""
    flat = [r for rs in rows for r in rs]
    return pa.StructArray.from_arrays(
        [
            pa.array([r.code for r in flat], pa.string()),
            pa.array([r.feature for r in flat], pa.string()),
            pa.array([r.contribution for r in flat], pa.float64()),
            pa.array([r.message for r in flat], pa.string()),
        ],
        fields=list(REASON),
    )


def decisions_table(d: Decisions, latency_us: int = 0) -> pa.Table:
    """Decisions as a table, the Decision fields as columns, in row order."""
    reasons = reason_values(d.reasons)
    triggers = pa.array([t for ts in d.triggers for t in ts], pa.string())
    n = len(d)
    return pa.table(
        {
            "order_id": pa.array(d.order_ids, pa.string()),
            "action": pa.DictionaryArray.from_arrays(pa.array(d.action, pa.int8()), _ACTIONS),
            "score": pa.array(d.score, pa.float64()),
            "path": pa.DictionaryArray.from_arrays(pa.array(d.path, pa.int8()), _PATHS),
            "reasons": lists(d.reasons, reasons),
            "review_triggers": lists(d.triggers, triggers),
            "model_version": pa.array([d.model_version] * n, pa.string()),
            "latency_us": pa.array(np.full(n, latency_us, np.int64)),
            "raw_score": pa.array(d.raw, pa.float64()),
            "base_value": pa.array(d.base, pa.float64()),
            "fallback_cause": pa.array(d.causes, pa.string()),
        }
    )
