"""Protobuf <-> engine types. The only module besides the server that knows protobuf.

Orders become an Arrow table with the history-file schema (`engine.schema`), so gRPC orders,
Arrow IPC batches and Parquet histories meet the engine in one shape.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.timestamp_pb2 import Timestamp
from ordersight.v1 import risk_pb2 as pb

from engine.anomaly import Alert
from engine.encode import (
    RISKY_CATEGORIES,
    Encoded,
    entity_keys,
    hash_columns,
    minor_exponent,
)
from engine.errors import InvalidInput
from engine.pipeline import Decisions
from engine.schema import ENTITY_COLUMNS, ORDER_SCHEMA, conform

_CURRENCY = re.compile(r"[A-Z]{3}")
_STRING_FIELDS = ENTITY_COLUMNS + ("billing_country", "shipping_country", "ip_country")


# google.protobuf.Timestamp's own valid range: 0001-01-01 to 9999-12-31.
_TS_MIN, _TS_MAX = -62135596800, 253402300799


def _us(ts) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds")


def check_timestamp(ts: Timestamp, name: str, latest: float = float(_TS_MAX)) -> None:
    """A timestamp in Timestamp's own range and no later than `latest` (epoch seconds)."""
    if not (_TS_MIN <= ts.seconds <= _TS_MAX and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidInput(
            f"{name}: not a valid timestamp (seconds {ts.seconds}, nanos {ts.nanos})", name
        )
    if ts.seconds > latest:
        raise InvalidInput(
            f"{name}: {ts.ToJsonString()} is in the future (latest accepted {_iso(latest)})",
            name,
        )


def validate_order(o: pb.Order, prefix: str = "", latest: float = float(_TS_MAX)) -> None:
    """Raise InvalidInput naming the first bad field of one order.

    `latest` (epoch seconds) is the latest acceptable `created_at`: the server passes its
    clock plus the allowed skew, since an order from the future would distort every
    velocity feature of its entities.
    """
    if not o.order_id:
        raise InvalidInput(f"{prefix}order_id: required", f"{prefix}order_id")
    if not o.customer_id:
        raise InvalidInput(f"{prefix}customer_id: required", f"{prefix}customer_id")
    if not o.HasField("created_at"):
        raise InvalidInput(f"{prefix}created_at: required", f"{prefix}created_at")
    check_timestamp(o.created_at, f"{prefix}created_at", latest)
    if o.customer.HasField("account_created_at"):
        check_timestamp(o.customer.account_created_at, f"{prefix}customer.account_created_at")
    if o.amount_minor < 0:
        raise InvalidInput(
            f"{prefix}amount_minor: must be >= 0, is {o.amount_minor}", f"{prefix}amount_minor"
        )
    if not _CURRENCY.fullmatch(o.currency):
        raise InvalidInput(
            f"{prefix}currency: must be a 3-letter ISO 4217 code in capitals, is {o.currency!r}",
            f"{prefix}currency",
        )
    for k, item in enumerate(o.items):
        if item.quantity < 0:
            f = f"{prefix}items[{k}].quantity"
            raise InvalidInput(f"{f}: must be >= 0, is {item.quantity}", f)
        if item.unit_price_minor < 0:
            f = f"{prefix}items[{k}].unit_price_minor"
            raise InvalidInput(f"{f}: must be >= 0, is {item.unit_price_minor}", f)


def orders_to_table(orders: list[pb.Order]) -> pa.Table:
    """Validated orders -> table with ORDER_SCHEMA (empty strings become nulls)."""
    cols: dict[str, list] = {f.name: [] for f in ORDER_SCHEMA}
    for o in orders:
        c, p, s = o.customer, o.payment, o.shipping
        cols["order_id"].append(o.order_id)
        cols["customer_id"].append(o.customer_id)
        cols["created_at"].append(_us(o.created_at))
        cols["amount_minor"].append(o.amount_minor)
        cols["currency"].append(o.currency)
        cols["channel"].append(o.channel or None)
        cols["account_created_at"].append(
            _us(c.account_created_at) if c.HasField("account_created_at") else None
        )
        cols["key_account"].append(c.key_account)
        cols["email_domain"].append(c.email_domain or None)
        cols["payment_method"].append(p.method or None)
        cols["card_bin"].append(p.card_bin or None)
        cols["card_fingerprint"].append(p.card_fingerprint or None)
        cols["billing_country"].append(p.billing_country or None)
        cols["shipping_country"].append(s.country or None)
        cols["shipping_postal_code"].append(s.postal_code or None)
        cols["address_fingerprint"].append(s.address_fingerprint or None)
        cols["ip"].append(o.ip or None)
        cols["ip_country"].append(o.ip_country or None)
        cols["device_id"].append(o.device_id or None)
        cols["items"].append(
            [
                {
                    "sku": i.sku,
                    "category": i.category or None,
                    "quantity": i.quantity,
                    "unit_price_minor": i.unit_price_minor,
                }
                for i in o.items
            ]
            if o.items
            else None
        )
        cols["note"].append(o.note or None)
    return pa.Table.from_pydict(cols, schema=ORDER_SCHEMA)


def encode_orders(orders: list[pb.Order]) -> tuple[list[str], Encoded]:
    """Validated orders straight to the kernels' arrays, without building an Arrow table.

    Gives exactly what `encode(orders_to_table(orders))` gives (tested). Serves ReportOutcomes,
    whose orders arrive parsed; Score and ScoreBatch decode from bytes (`engine.wire`, tested
    equal to this).
    """
    n = len(orders)
    ids: list[str] = []
    t = np.empty(n)
    amount_minor = np.empty(n, np.int64)
    scale = np.empty(n)
    age = np.full(n, np.nan)
    key_account = np.zeros(n, np.bool_)
    n_lines = np.zeros(n)
    n_units = np.zeros(n)
    risky = np.full(n, np.nan)
    note_len = np.zeros(n)
    strings: dict[str, list[str]] = {name: [] for name in _STRING_FIELDS}
    for i, o in enumerate(orders):
        c, p, s = o.customer, o.payment, o.shipping
        ids.append(o.order_id)
        t[i] = _us(o.created_at) / 1e6
        amount_minor[i] = o.amount_minor
        scale[i] = 10.0 ** minor_exponent(o.currency)
        if c.HasField("account_created_at"):
            age[i] = (t[i] - _us(c.account_created_at) / 1e6) / 86400.0
        key_account[i] = c.key_account
        strings["customer_id"].append(o.customer_id)
        strings["device_id"].append(o.device_id)
        strings["card_fingerprint"].append(p.card_fingerprint)
        strings["ip"].append(o.ip)
        strings["email_domain"].append(c.email_domain)
        strings["address_fingerprint"].append(s.address_fingerprint)
        strings["billing_country"].append(p.billing_country)
        strings["shipping_country"].append(s.country)
        strings["ip_country"].append(o.ip_country)
        if o.items:
            total = risky_value = units = 0.0
            for item in o.items:
                line = float(item.quantity) * float(item.unit_price_minor)
                total += line
                units += item.quantity
                if item.category in RISKY_CATEGORIES:
                    risky_value += line
            n_lines[i] = len(o.items)
            n_units[i] = units
            risky[i] = risky_value / total if total > 0 else 0.0
        note_len[i] = len(o.note)
    hashed = hash_columns(
        [strings[name] for name in _STRING_FIELDS],
        [j + 1 for j in range(len(ENTITY_COLUMNS))] + [0, 0, 0],
    )
    enc = Encoded(
        n=n,
        t=t,
        amount=amount_minor / scale,
        amount_minor=amount_minor,
        account_age_days=age,
        key_account=key_account,
        keys=entity_keys(list(hashed[: len(ENTITY_COLUMNS)])),
        billing_country=hashed[-3],
        shipping_country=hashed[-2],
        ip_country=hashed[-1],
        n_lines=n_lines,
        n_units=n_units,
        risky_share=risky,
        note_len=note_len,
    )
    return ids, enc


def order_from_row(row: dict[str, Any]) -> pb.Order:
    """One history row (flat columns, as `Table.to_pylist` gives) as the nested protobuf
    Order; nulls stay unset. The inverse of `orders_to_table`."""

    def s(v: str | None) -> str:
        return v or ""

    o = pb.Order(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        channel=s(row.get("channel")),
        ip=s(row.get("ip")),
        ip_country=s(row.get("ip_country")),
        device_id=s(row.get("device_id")),
        note=s(row.get("note")),
    )
    o.created_at.FromDatetime(row["created_at"])
    if row.get("account_created_at") is not None:
        o.customer.account_created_at.FromDatetime(row["account_created_at"])
    o.customer.key_account = bool(row.get("key_account"))
    o.customer.email_domain = s(row.get("email_domain"))
    o.payment.method = s(row.get("payment_method"))
    o.payment.card_bin = s(row.get("card_bin"))
    o.payment.card_fingerprint = s(row.get("card_fingerprint"))
    o.payment.billing_country = s(row.get("billing_country"))
    o.shipping.country = s(row.get("shipping_country"))
    o.shipping.postal_code = s(row.get("shipping_postal_code"))
    o.shipping.address_fingerprint = s(row.get("address_fingerprint"))
    for item in row.get("items") or []:
        o.items.add(
            sku=s(item["sku"]),
            category=s(item["category"]),
            quantity=item["quantity"] or 0,
            unit_price_minor=item["unit_price_minor"] or 0,
        )
    return o


def orders_from_table(table: pa.Table) -> list[pb.Order]:
    return [order_from_row(r) for r in table.to_pylist()]


def arrow_to_table(payload: bytes | memoryview, latest: float = float(_TS_MAX)) -> pa.Table:
    """An Arrow IPC stream of history-file columns -> checked table."""
    try:
        table = pa.ipc.open_stream(payload).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(
            f"arrow_ipc: not a readable Arrow IPC stream: {exc}", "arrow_ipc"
        ) from exc
    table = conform(table, where="arrow_ipc")
    check_values(table, "arrow_ipc", latest)
    return table


def check_values(table: pa.Table, where: str, latest: float = float(_TS_MAX)) -> None:
    """The value checks `validate_order` makes, over a whole (conformed) table."""

    def first_bad(mask: pa.ChunkedArray | pa.Array) -> int | None:
        idx = pc.indices_nonzero(mask.fill_null(False))
        return int(idx[0].as_py()) if len(idx) else None

    def seconds(name: str) -> pa.ChunkedArray:
        return pc.divide(table.column(name).cast(pa.int64()), 1_000_000)

    items = table.column("items").combine_chunks().flatten()
    order_id = table.column("order_id")
    checks = (
        ("order_id", order_id, pc.equal(pc.utf8_length(order_id), 0), "must not be empty"),
        (
            "customer_id",
            table.column("customer_id"),
            pc.equal(pc.utf8_length(table.column("customer_id")), 0),
            "must not be empty",
        ),
        (
            "created_at",
            table.column("created_at"),
            pc.or_(
                pc.less(seconds("created_at"), _TS_MIN), pc.greater(seconds("created_at"), latest)
            ),
            f"must lie between year 1 and {_iso(latest)}",
        ),
        (
            "account_created_at",
            table.column("account_created_at"),
            pc.or_(
                pc.less(seconds("account_created_at"), _TS_MIN),
                pc.greater(seconds("account_created_at"), _TS_MAX),
            ),
            "must lie between years 1 and 9999",
        ),
        (
            "amount_minor",
            table.column("amount_minor"),
            pc.less(table.column("amount_minor"), 0),
            "must be >= 0",
        ),
        (
            "currency",
            table.column("currency"),
            pc.invert(pc.match_substring_regex(table.column("currency"), r"\A[A-Z]{3}\z")),
            "must be a 3-letter ISO 4217 code in capitals",
        ),
        (
            "items.quantity",
            items.field("quantity"),
            pc.less(items.field("quantity"), 0),
            "must be >= 0",
        ),
        (
            "items.unit_price_minor",
            items.field("unit_price_minor"),
            pc.less(items.field("unit_price_minor"), 0),
            "must be >= 0",
        ),
    )
    for name, values, mask, what in checks:
        row = first_bad(mask)
        if row is not None:
            where_row = "item" if name.startswith("items.") else "row"
            raise InvalidInput(
                f"{where}: column '{name}' {where_row} {row}: {what}, is {values[row].as_py()!r}",
                name,
            )


def decisions_to_pb(d: Decisions, latency_us: list[int]) -> list[pb.Decision]:
    out = []
    for i in range(len(d)):
        out.append(
            pb.Decision(
                order_id=d.order_ids[i],
                action=int(d.action[i]),
                score=float(d.score[i]),
                path=int(d.path[i]),
                reasons=[
                    pb.Reason(
                        code=r.code,
                        feature=r.feature,
                        contribution=r.contribution,
                        message=r.message,
                    )
                    for r in d.reasons[i]
                ],
                review_triggers=d.triggers[i],
                model_version=d.model_version,
                latency_us=latency_us[i],
                raw_score=float(d.raw[i]),
                base_value=float(d.base[i]),
                fallback_cause=d.causes[i],
            )
        )
    return out


def _ts(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(round(epoch_s * 1e9)))
    return ts


def alert_to_pb(a: Alert) -> pb.Alert:
    return pb.Alert(
        series=a.series,
        kind=a.kind,
        severity=a.severity,
        start=_ts(a.start),
        at=_ts(a.at),
        expected=a.expected,
        actual=a.actual,
        score=a.score,
        explanation=a.explanation,
        end=_ts(a.end) if a.end is not None else None,
    )


_ACTIONS = pa.array(["ACTION_UNSPECIFIED", "APPROVE", "REVIEW", "DECLINE"])
_PATHS = pa.array(["PATH_UNSPECIFIED", "SCREENED_OUT", "MODEL", "FALLBACK"])
_REASON = pa.struct(
    [
        ("code", pa.string()),
        ("feature", pa.string()),
        ("contribution", pa.float64()),
        ("message", pa.string()),
    ]
)


def _lists(rows: list[list[Any]], values: pa.Array) -> pa.Array:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def table_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decisions_table(d: Decisions, latency_us: int = 0) -> pa.Table:
    """Decisions as a table, the Decision fields as columns, in row order."""
    flat = [r for rs in d.reasons for r in rs]
    reasons = pa.StructArray.from_arrays(
        [
            pa.array([r.code for r in flat], pa.string()),
            pa.array([r.feature for r in flat], pa.string()),
            pa.array([r.contribution for r in flat], pa.float64()),
            pa.array([r.message for r in flat], pa.string()),
        ],
        fields=list(_REASON),
    )
    triggers = pa.array([t for ts in d.triggers for t in ts], pa.string())
    n = len(d)
    return pa.table(
        {
            "order_id": pa.array(d.order_ids, pa.string()),
            "action": pa.DictionaryArray.from_arrays(pa.array(d.action, pa.int8()), _ACTIONS),
            "score": pa.array(d.score, pa.float64()),
            "path": pa.DictionaryArray.from_arrays(pa.array(d.path, pa.int8()), _PATHS),
            "reasons": _lists(d.reasons, reasons),
            "review_triggers": _lists(d.triggers, triggers),
            "model_version": pa.array([d.model_version] * n, pa.string()),
            "latency_us": pa.array(np.full(n, latency_us, np.int64)),
            "raw_score": pa.array(d.raw, pa.float64()),
            "base_value": pa.array(d.base, pa.float64()),
            "fallback_cause": pa.array(d.causes, pa.string()),
        }
    )
