"""History files and Arrow tables: missing columns and wrong types are refused by name."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.codec.arrow_orders import conform
from engine.codec.history import history_from_table, read_history
from engine.errors import InvalidInput
from engine.orders.schema import HISTORY_SCHEMA, ORDER_SCHEMA


def test_history_conforms(history) -> None:
    table = conform(history, with_labels=True)
    assert table.schema == HISTORY_SCHEMA


def test_optional_columns_may_be_absent(history) -> None:
    minimal = history.select(["order_id", "customer_id", "created_at", "amount_minor", "currency"])
    table = conform(minimal)
    assert table.schema == ORDER_SCHEMA
    assert table.column("device_id").null_count == table.num_rows


@pytest.mark.parametrize(
    "column", ["order_id", "customer_id", "created_at", "amount_minor", "currency"]
)
def test_missing_required_column(history, column: str) -> None:
    with pytest.raises(InvalidInput, match=f"required column '{column}' is missing") as e:
        conform(history.drop_columns([column]))
    assert e.value.field == column


def test_wrong_type_names_the_column(history) -> None:
    bad = history.set_column(
        history.schema.get_field_index("amount_minor"),
        "amount_minor",
        history.column("amount_minor").cast(pa.string()),
    )
    with pytest.raises(InvalidInput, match="column 'amount_minor' must be int64, is string"):
        conform(bad)
    bad = history.set_column(
        history.schema.get_field_index("created_at"), "created_at", history.column("amount_minor")
    )
    with pytest.raises(InvalidInput, match="column 'created_at' must be timestamp"):
        conform(bad)


def test_nulls_in_required_column(history) -> None:
    ids = history.column("customer_id").to_pylist()
    ids[3] = None
    bad = history.set_column(
        history.schema.get_field_index("customer_id"), "customer_id", pa.array(ids, pa.string())
    )
    with pytest.raises(InvalidInput, match="'customer_id' has 1 null"):
        conform(bad)


def test_labels(history) -> None:
    h = history_from_table(history.slice(0, 100).drop_columns(["label_known_at"]), 2.0)
    known = h.labels >= 0
    assert ((h.known_at[known] - h.t[known]) == 2 * 86400).all()
    bad = history.slice(0, 10).set_column(
        history.schema.get_field_index("is_fraud"), "is_fraud", pa.array([2] * 10, pa.int8())
    )
    with pytest.raises(InvalidInput, match="column 'is_fraud' row 0: must be 0, 1 or null"):
        history_from_table(bad)


def test_unreadable_file(tmp_path) -> None:
    p = tmp_path / "x.parquet"
    p.write_text("nope")
    with pytest.raises(InvalidInput, match="not a readable Parquet file"):
        read_history(p)
    with pytest.raises(InvalidInput, match="no such file"):
        read_history(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"order_id": ["a"]}), p)
    with pytest.raises(InvalidInput, match="'customer_id' is missing"):
        read_history(p)
