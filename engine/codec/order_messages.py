"""History rows as protobuf `Order` messages: for clients that send a history to a running
engine (the load generator, the CLI, tests). The engine itself decodes request bytes with
`engine.codec.order_decoder` and never builds these objects."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from ordersight.v1 import risk_pb2 as pb


def order_from_row(row: dict[str, Any]) -> pb.Order:
    """One history row (flat columns, as `Table.to_pylist` gives) as the nested protobuf
    Order; nulls stay unset. The inverse of decoding it."""

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
