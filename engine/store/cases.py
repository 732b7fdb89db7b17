"""Review cases and decisions-index rows, built from what the decision log holds.

A case is built from a decision-log record batch (`engine.decision_log.records.SCHEMA`), so
a case opened live and one rebuilt from the log after a crash are the same case: the live
path turns a micro-batch's REVIEW rows into such a batch (`records.to_batch`) first.
The key facts a reviewer reads come from the order's features (computed before the order
joined the state), which the log keeps; the order's personal fields are not in the log in
clear and so not in a case either.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.decision.control import CAUSE as CONTROL_CAUSE
from engine.decision.policy import REVIEW
from engine.decision_log.records import DECISION, REPLAY, Entry, replay_arrays, to_batch
from engine.features.matrix import FEATURE_NAMES
from engine.orders.arrays import OrderArrays
from engine.store.base import Case

FACTS = {
    "account_age_days": "account age (days)",
    "key_account": "key account",
    "amount_vs_customer_avg": "amount / customer's average",
    "customer_id.cnt_24h": "customer's orders, last 24 h",
    "customer_id.cnt_30d": "customer's orders, last 30 days",
    "customer_id.known_frauds_30d": "customer's known frauds, last 30 days",
    "customer_id+device_id.cnt_30d": "orders from this device by this customer, 30 days",
    "customer_id+card_fingerprint.cnt_30d": "orders with this card by this customer, 30 days",
    "device_id.customer_changes_30d": "customers seen on this device, 30 days",
    "card_fingerprint.customer_changes_30d": "customers seen with this card, 30 days",
    "billing_shipping_mismatch": "billing and shipping countries differ",
    "ip_billing_mismatch": "IP and billing countries differ",
    "n_units": "units ordered",
    "risky_category_share": "share of the basket in risky categories",
}
"""The features shown as a case's key facts, with the words a reviewer reads."""
_FACT_INDEX = {name: FEATURE_NAMES.index(name) for name in FACTS}


def review_entry(entry: Entry) -> Entry | None:
    """The REVIEW rows of a champion decision entry, as an entry of their own (None when it
    has none)."""
    if entry.kind != DECISION or entry.decisions is None or entry.arrays is None:
        return None
    rows = np.flatnonzero(entry.decisions.action == REVIEW)
    if not rows.size:
        return None
    r = rows.tolist()
    return Entry(
        DECISION, entry.seq, [entry.ids[i] for i in r], entry.t[rows],
        [entry.channels[i] for i in r], entry.arrays.take(rows), _texts(entry.customer, rows),
        _texts(entry.currency, rows), None if entry.X is None else entry.X[rows],
        entry.decisions.take(r), None if entry.latency_us is None else entry.latency_us[rows],
        entry.champion, entry.challenger, logged_at=entry.logged_at,
    )  # fmt: skip


def _texts(t: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> Any:
    if t is None:
        return None
    offsets, data = t
    parts = [data[offsets[i] : offsets[i + 1]] for i in rows.tolist()]
    lengths = np.array([p.size for p in parts], np.int32)
    out = np.zeros(rows.size + 1, np.int32)
    np.cumsum(lengths, out=out[1:])
    return out, np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def cases_from_entry(entry: Entry, opened_at: float) -> list[Case]:
    sub = review_entry(entry)
    return [] if sub is None else cases_from_batch(to_batch([sub]), opened_at)


def cases_from_batch(batch: pa.RecordBatch, opened_at: float | None = None) -> list[Case]:
    """A case for every champion REVIEW row of a log batch; `opened_at` defaults to the
    row's logged_at (a case rebuilt from the log opens when its decision was made)."""
    mask = pc.and_(
        pc.equal(batch.column("kind"), "decision"), pc.equal(batch.column("action"), "REVIEW")
    )
    rows = batch.filter(mask)
    if not rows.num_rows:
        return []
    feats = (
        rows.column("features").flatten().to_numpy(zero_copy_only=False).reshape(rows.num_rows, -1)
    )
    replay = rows.column("replay")
    raw = replay.buffers()[1].to_pybytes()[replay.offset * REPLAY.itemsize :]
    cols = rows.to_pydict()
    size = REPLAY.itemsize
    out = []
    for i in range(rows.num_rows):
        facts = {label: _fact(feats[i, _FACT_INDEX[name]]) for name, label in FACTS.items()}
        logged = cols["logged_at"][i].timestamp()
        out.append(
            Case(
                order_id=cols["order_id"][i], log_seq=int(cols["seq"][i]),
                customer_id=cols["customer_id"][i] or "",
                created_at=cols["created_at"][i].timestamp(),
                opened_at=logged if opened_at is None else opened_at,
                amount=float(cols["amount"][i]),
                currency=cols["currency"][i] or "", channel=cols["channel"][i] or "",
                score=float(cols["score"][i]), path=cols["path"][i],
                model_version=cols["model_version"][i] or "",
                triggers=list(cols["review_triggers"][i]),
                reasons=[dict(r) for r in cols["reasons"][i]], facts=facts,
                replay=base64.b64encode(raw[i * size : (i + 1) * size]).decode(),
            )
        )  # fmt: skip
    return out


def _fact(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 3)


def case_order(case: Case) -> OrderArrays:
    """The encoded order of a case (entity keys, as the velocity kernels read them)."""
    raw = base64.b64decode(case.replay)
    arr = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(REPLAY.itemsize), 1, [None, pa.py_buffer(raw)]
    )
    return replay_arrays(arr)[0]


def _arm(causes: list[str | None]) -> list[str]:
    return ["control" if c == CONTROL_CAUSE else "model" for c in causes]


def decision_rows_from_entry(entry: Entry) -> list[tuple[Any, ...]]:
    """Decisions-index rows (engine.store.base.DECISION_COLUMNS) of a champion entry."""
    d, a = entry.decisions, entry.arrays
    if entry.kind != DECISION or d is None or a is None:
        return []
    from engine.decision.policy import ACTION_NAMES, PATH_NAMES

    customers = _strings(entry.customer, entry.n)
    currencies = _strings(entry.currency, entry.n)
    return list(
        zip(
            entry.ids, [entry.seq] * entry.n, customers, entry.t.tolist(), a.amount.tolist(),
            currencies, [c or "" for c in entry.channels],
            [ACTION_NAMES.get(int(x), "ACTION_UNSPECIFIED") for x in d.action.tolist()],
            [PATH_NAMES.get(int(x), "PATH_UNSPECIFIED") for x in d.path.tolist()],
            d.score.tolist(), [d.model_version] * entry.n, _arm(list(d.causes)), strict=True,
        )
    )  # fmt: skip


def _strings(t: tuple[np.ndarray, np.ndarray] | None, n: int) -> list[str]:
    if t is None:
        return [""] * n
    offsets, data = t
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode() for i in range(n)]


def decision_rows_from_batch(batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
    """Decisions-index rows of a log batch's champion decisions."""
    rows = batch.filter(pc.equal(batch.column("kind"), "decision"))
    if not rows.num_rows:
        return []
    c = rows.to_pydict()
    return list(
        zip(
            c["order_id"], [int(s) for s in c["seq"]], [x or "" for x in c["customer_id"]],
            [t.timestamp() for t in c["created_at"]], c["amount"], [x or "" for x in c["currency"]],
            [x or "" for x in c["channel"]], c["action"], c["path"],
            [0.0 if s is None else s for s in c["score"]], [x or "" for x in c["model_version"]],
            _arm(c["fallback_cause"]), strict=True,
        )
    )  # fmt: skip
