"""Arrow orders (IPC batches, histories) decode to exactly what the wire decoder gives for the
same orders, and untrusted Arrow input is bounded and validated before any kernel reads it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest

from engine.codec.arrow_orders import conform, decode_table, read_ipc
from engine.codec.order_decoder import decode_orders
from engine.codec.order_messages import orders_from_table
from engine.errors import InvalidInput
from engine.orders.batch import OrderRules
from engine.orders.rules import Limits
from engine.orders.schema import ORDER_SCHEMA
from tests.grpc_harness import arrow_ipc, order_columns

RULES = OrderRules()


def test_arrow_and_wire_give_the_same_arrays(history: pa.Table) -> None:
    table = history.slice(0, 3000)
    via_arrow = decode_table(table)
    messages = [o.SerializeToString() for o in orders_from_table(table)]
    via_wire = RULES.check(decode_orders(messages), math.inf)
    assert via_wire.ok.all()
    assert via_arrow.ids == via_wire.ids and via_arrow.channels == via_wire.channels
    for f in dataclasses.fields(via_wire.arrays):
        a, b = getattr(via_arrow.arrays, f.name), getattr(via_wire.arrays, f.name)
        np.testing.assert_array_equal(a, b, err_msg=f.name)


def test_history_round_trips_through_protobuf(history: pa.Table) -> None:
    rows = conform(history.slice(0, 500))
    again = decode_table(order_columns(rows))
    assert again.ids == rows.column("order_id").to_pylist()


def ipc(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_compressed_bomb_is_refused_before_it_expands(history: pa.Table) -> None:
    rows = order_columns(history.slice(0, 2000))
    rows = rows.set_column(
        rows.schema.get_field_index("note"), "note", pa.array(["x" * 4000] * 2000)
    )
    payload = ipc(rows, "zstd")
    assert len(payload) < 1_000_000  # 8 MB of notes compress to little
    with pytest.raises(InvalidInput, match="decompresses to more than 1,000,000 bytes"):
        read_ipc(payload, Limits(max_arrow_bytes=1_000_000))
    assert read_ipc(payload, Limits()).num_rows == 2000


def test_too_many_rows_are_refused(history: pa.Table) -> None:
    payload = arrow_ipc(order_columns(history.slice(0, 50)))
    with pytest.raises(InvalidInput, match="more than 10 orders"):
        read_ipc(payload, Limits(max_batch_orders=10))


def minimal(**columns: pa.Array) -> pa.Table:
    base = {
        "order_id": pa.array(["a", "b"]),
        "customer_id": pa.array(["c", "d"]),
        "created_at": pa.array([1_769_947_200_000_000] * 2, pa.timestamp("us", tz="UTC")),
        "amount_minor": pa.array([100, 200]),
        "currency": pa.array(["USD", "EUR"]),
    }
    return pa.table(base | columns)


def test_bad_utf8_names_the_column_and_row() -> None:
    offsets = pa.py_buffer(np.array([0, 2, 5], np.int32).tobytes())
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ok\xff\xfe\xfd")])
    with pytest.raises(InvalidInput, match=r"column 'device_id' row 1: not valid UTF-8"):
        decode_table(minimal(device_id=bad))


def test_the_schema_is_the_order_schema() -> None:
    assert conform(minimal()).schema == ORDER_SCHEMA


def test_a_negative_declared_size_does_not_slip_past_the_cap() -> None:
    """A compressed buffer's size prefix of -1 means "stored as is"; any other negative size
    is refused, so it cannot cancel out another buffer's size in the cap."""
    rows = 20_000
    big = pa.table({"a": pa.array([b"\0" * 2000] * rows, pa.binary(2000))})
    payload = bytearray(ipc(big, "zstd"))
    declared = (rows * 2000).to_bytes(8, "little")
    at = bytes(payload).rfind(declared)
    assert at > 0
    payload[at : at + 8] = (-(rows * 2000) - 10).to_bytes(8, "little", signed=True)
    with pytest.raises(InvalidInput, match="not a readable Arrow IPC stream"):
        read_ipc(bytes(payload), Limits(max_arrow_bytes=1_000_000))


def test_a_null_item_is_an_empty_item() -> None:
    child = pa.StructArray.from_arrays(
        [pa.array(["s"]), pa.array(["electronics"]), pa.array([5]), pa.array([100])],
        names=["sku", "category", "quantity", "unit_price_minor"],
        mask=pa.array([True]),
    )
    items = pa.ListArray.from_arrays(pa.array([0, 1, 1], pa.int32()), child)
    got = decode_table(minimal(items=items)).arrays
    assert got.n_units.tolist() == [0.0, 0.0]
    assert got.risky_share[0] == 0.0 and np.isnan(got.risky_share[1])
