"""Protobuf orders: the direct encoder (Score's hot path) equals the Arrow route."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from engine.convert import encode_orders, order_from_row, orders_to_table
from engine.encode import encode
from engine.schema import conform
from tests.grpc_harness import orders_of, simple_order


def test_direct_encoding_equals_arrow_encoding(history: pa.Table) -> None:
    orders = orders_of(history.slice(0, 3000))
    extra = simple_order("o-unicode", note="Bitte schnell liefern — danke ✓", currency="JPY")
    extra.items.add(sku="s", category="gift_card", quantity=2, unit_price_minor=500)
    extra.items.add(sku="t", category="books", quantity=0, unit_price_minor=0)
    empty_items = simple_order("o-zero")
    empty_items.items.add(sku="z", category="books", quantity=0, unit_price_minor=0)
    orders += [extra, empty_items]
    ids, direct = encode_orders(orders)
    table = orders_to_table(orders)
    via_arrow = encode(conform(table))
    assert ids == table.column("order_id").to_pylist()
    for f in dataclasses.fields(direct):
        np.testing.assert_array_equal(
            getattr(direct, f.name), getattr(via_arrow, f.name), err_msg=f.name
        )


def test_history_round_trips_through_protobuf(history: pa.Table) -> None:
    rows = history.slice(0, 500)
    table = orders_to_table(orders_of(rows))
    for name in ("order_id", "customer_id", "created_at", "amount_minor", "device_id", "items"):
        assert table.column(name).to_pylist() == conform(rows).column(name).to_pylist(), name
    assert order_from_row(rows.to_pylist()[0]).order_id == rows.column("order_id")[0].as_py()
