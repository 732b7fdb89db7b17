"""The order columns: one schema for history files, Arrow IPC batches and decoded gRPC orders.

Every path into the engine (a Parquet history, an Arrow record batch in `ScoreBatch`, a
protobuf `Order`) ends as an `OrderColumns` table with exactly these columns, so the
feature kernels cannot tell where an order came from. That is what makes training and
serving compute the same features.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from engine.errors import InvalidInput

TS = pa.timestamp("us", tz="UTC")

ITEM_TYPE = pa.struct(
    [
        pa.field("sku", pa.string()),
        pa.field("category", pa.string()),
        pa.field("quantity", pa.int64()),
        pa.field("unit_price_minor", pa.int64()),
    ]
)


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    required: bool = False
    doc: str = ""


ORDER_COLUMNS: tuple[Column, ...] = (
    Column("order_id", pa.string(), True, "unique order identifier"),
    Column("customer_id", pa.string(), True, "customer account identifier"),
    Column("created_at", TS, True, "order time (UTC)"),
    Column("amount_minor", pa.int64(), True, "order total in minor currency units (cents)"),
    Column("currency", pa.string(), True, "ISO 4217 code"),
    Column("channel", pa.string(), False, "web, app, marketplace, phone, ..."),
    Column("account_created_at", TS, False, "when the customer account was opened"),
    Column("key_account", pa.bool_(), False, "customer is a key account"),
    Column("email_domain", pa.string(), False, "domain of the customer's email"),
    Column("payment_method", pa.string(), False, "card, wallet, bank_transfer, ..."),
    Column("card_bin", pa.string(), False, "first six digits of the card"),
    Column("card_fingerprint", pa.string(), False, "stable token of the card"),
    Column("billing_country", pa.string(), False, "ISO 3166 alpha-2"),
    Column("shipping_country", pa.string(), False, "ISO 3166 alpha-2"),
    Column("shipping_postal_code", pa.string(), False, "postal code"),
    Column("address_fingerprint", pa.string(), False, "stable token of the shipping address"),
    Column("ip", pa.string(), False, "client IP address"),
    Column("ip_country", pa.string(), False, "geolocated country of the IP"),
    Column("device_id", pa.string(), False, "device identifier"),
    Column("items", pa.list_(ITEM_TYPE), False, "order lines"),
    Column("note", pa.string(), False, "free-text note from the customer"),
)

LABEL_COLUMNS: tuple[Column, ...] = (
    Column("is_fraud", pa.int8(), False, "1 fraud, 0 legitimate, null unknown"),
    Column("label_known_at", TS, False, "when the label became known"),
)

ORDER_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in ORDER_COLUMNS])
HISTORY_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in ORDER_COLUMNS + LABEL_COLUMNS])

# Entity columns that get velocity state, in the order their features appear.
ENTITY_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "device_id",
    "card_fingerprint",
    "ip",
    "email_domain",
    "address_fingerprint",
)


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether `actual` can be cast to `expected` without guessing."""
    if actual == expected or pa.types.is_null(actual):
        return True
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual) or (
            expected == pa.int8() and pa.types.is_boolean(actual)
        )
    if pa.types.is_string(expected):
        return (
            pa.types.is_string(actual)
            or pa.types.is_large_string(actual)
            or (
                pa.types.is_dictionary(actual)
                and (
                    pa.types.is_string(actual.value_type)
                    or pa.types.is_large_string(actual.value_type)
                )
            )
        )
    if pa.types.is_boolean(expected):
        return pa.types.is_boolean(actual)
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and pa.types.is_struct(
            actual.value_type
        )
    return False


def conform(table: pa.Table, *, with_labels: bool = False, where: str = "orders") -> pa.Table:
    """Check and cast a table to the order schema; missing optional columns become nulls.

    Raises `InvalidInput` naming the column when a required column is missing, a column has
    a type that cannot be read as the schema's type, or a required column holds nulls.
    """
    columns = ORDER_COLUMNS + (LABEL_COLUMNS if with_labels else ())
    names = set(table.column_names)
    if len(names) != len(table.column_names):
        dup = next(n for n in table.column_names if table.column_names.count(n) > 1)
        raise InvalidInput(f"{where}: column '{dup}' appears more than once", dup)
    n = table.num_rows
    arrays = []
    for col in columns:
        if col.name not in names:
            if col.required:
                raise InvalidInput(f"{where}: required column '{col.name}' is missing", col.name)
            arrays.append(pa.nulls(n, col.type))
            continue
        arr = table.column(col.name)
        if not _compatible(arr.type, col.type):
            raise InvalidInput(
                f"{where}: column '{col.name}' must be {col.type}, is {arr.type}", col.name
            )
        if col.name == "items":
            arr = _conform_items(arr, where)
        else:
            try:
                if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
                    # Naive timestamps are read as UTC: the schema stores UTC instants.
                    arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
                arr = arr.cast(col.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInput(
                    f"{where}: column '{col.name}' cannot be read as {col.type}: {exc}", col.name
                ) from exc
        if col.required and arr.null_count:
            raise InvalidInput(
                f"{where}: required column '{col.name}' has {arr.null_count} null value(s)",
                col.name,
            )
        arrays.append(arr)
    schema = pa.schema([pa.field(c.name, c.type) for c in columns])
    return pa.Table.from_arrays(arrays, schema=schema)


def _conform_items(arr: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    fields = {f.name for f in arr.type.value_type}
    for f in ITEM_TYPE:
        if f.name not in fields:
            raise InvalidInput(f"{where}: column 'items' lacks struct field '{f.name}'", "items")
    try:
        return arr.cast(pa.list_(ITEM_TYPE))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"{where}: column 'items' cannot be read: {exc}", "items") from exc
