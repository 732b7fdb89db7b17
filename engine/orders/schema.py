"""The order schema: one table of fields that every codec, the validator and the features read.

Each row names a field twice, as the history/Arrow column and as its path in the
`ordersight.v1.Order` message, and says what kind of value it holds; the kind decides which
rules of `engine.orders.rules` apply. Every entry point (Score and ScoreBatch bytes, Arrow
IPC, Parquet/CSV histories, ReportOutcomes) decodes to `engine.orders.columns.OrderColumns`,
whose slots are laid out from this table, so adding a field to `Order` is one row here and
one in the wire decoder's field table (`engine.codec.order_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# Value kinds: which rules apply (engine.orders.rules) and where a value lives in OrderColumns.
TEXT, NOTE, CURRENCY, COUNTRY = "text", "note", "currency", "country"  # strings
TIME, AMOUNT, QUANTITY, FLAG, ITEMS = "time", "amount", "quantity", "flag", "items"
STRING_KINDS = (TEXT, NOTE, CURRENCY, COUNTRY)


@dataclass(frozen=True)
class Field:
    column: str
    """Column name in histories and Arrow IPC batches."""
    path: str
    """Path in the protobuf message (`customer.account_created_at`)."""
    type: pa.DataType
    kind: str
    required: bool = False
    doc: str = ""


ITEM_FIELDS: tuple[Field, ...] = (
    Field("sku", "sku", pa.string(), TEXT, False, "stock keeping unit"),
    Field("category", "category", pa.string(), TEXT, False, "product category"),
    Field("quantity", "quantity", pa.int64(), QUANTITY, False, "units ordered"),
    Field("unit_price_minor", "unit_price_minor", pa.int64(), AMOUNT, False, "price of one unit"),
)
ITEM_TYPE = pa.struct([pa.field(f.column, f.type) for f in ITEM_FIELDS])

ORDER_FIELDS: tuple[Field, ...] = (
    Field("order_id", "order_id", pa.string(), TEXT, True, "unique order identifier"),
    Field("customer_id", "customer_id", pa.string(), TEXT, True, "customer account identifier"),
    Field("created_at", "created_at", TS, TIME, True, "order time (UTC)"),
    Field("amount_minor", "amount_minor", pa.int64(), AMOUNT, True, "total in minor units"),
    Field("currency", "currency", pa.string(), CURRENCY, True, "ISO 4217 code"),
    Field("channel", "channel", pa.string(), TEXT, False, "web, app, marketplace, phone, ..."),
    Field("account_created_at", "customer.account_created_at", TS, TIME, False, "account opened"),
    Field("key_account", "customer.key_account", pa.bool_(), FLAG, False, "a key account"),
    Field("email_domain", "customer.email_domain", pa.string(), TEXT, False, "email's domain"),
    Field("payment_method", "payment.method", pa.string(), TEXT, False, "card, wallet, ..."),
    Field("card_bin", "payment.card_bin", pa.string(), TEXT, False, "first digits of the card"),
    Field("card_fingerprint", "payment.card_fingerprint", pa.string(), TEXT, False, "card token"),
    Field("billing_country", "payment.billing_country", pa.string(), COUNTRY, False, "ISO 3166"),
    Field("shipping_country", "shipping.country", pa.string(), COUNTRY, False, "ISO 3166"),
    Field("shipping_postal_code", "shipping.postal_code", pa.string(), TEXT, False, "postal code"),
    Field(
        "address_fingerprint",
        "shipping.address_fingerprint",
        pa.string(),
        TEXT,
        False,
        "stable token of the shipping address",
    ),  # fmt: skip
    Field("ip", "ip", pa.string(), TEXT, False, "client IP address"),
    Field("ip_country", "ip_country", pa.string(), COUNTRY, False, "geolocated country of the IP"),
    Field("device_id", "device_id", pa.string(), TEXT, False, "device identifier"),
    Field("items", "items", pa.list_(ITEM_TYPE), ITEMS, False, "order lines"),
    Field("note", "note", pa.string(), NOTE, False, "free-text note from the customer"),
)

LABEL_FIELDS: tuple[Field, ...] = (
    Field("is_fraud", "is_fraud", pa.int8(), FLAG, False, "1 fraud, 0 legitimate, null unknown"),
    Field("label_known_at", "label_known_at", TS, TIME, False, "when the label became known"),
)

ORDER_SCHEMA = pa.schema([pa.field(f.column, f.type) for f in ORDER_FIELDS])
HISTORY_SCHEMA = pa.schema([pa.field(f.column, f.type) for f in ORDER_FIELDS + LABEL_FIELDS])
BY_COLUMN = {f.column: f for f in ORDER_FIELDS}

# Slots of OrderColumns, in table order.
STRING_FIELDS = tuple(f for f in ORDER_FIELDS if f.kind in STRING_KINDS)
TIME_FIELDS = tuple(f for f in ORDER_FIELDS if f.kind == TIME)
ITEM_STRING_FIELDS = tuple(f for f in ITEM_FIELDS if f.kind in STRING_KINDS)
STRING_SLOT = {f.column: k for k, f in enumerate(STRING_FIELDS)}
TIME_SLOT = {f.column: k for k, f in enumerate(TIME_FIELDS)}
ITEM_STRING_SLOT = {f.column: k for k, f in enumerate(ITEM_STRING_FIELDS)}

# Entity columns that get velocity state, in the order their features appear, then the pairs
# that say whether a customer has used this device / card before.
ENTITY_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "device_id",
    "card_fingerprint",
    "ip",
    "email_domain",
    "address_fingerprint",
)
PAIRS: tuple[tuple[str, str], ...] = (
    ("customer_id", "device_id"),
    ("customer_id", "card_fingerprint"),
)
ENTITY_KINDS: tuple[str, ...] = ENTITY_COLUMNS + tuple(f"{a}+{b}" for a, b in PAIRS)
COUNTRY_COLUMNS: tuple[str, ...] = ("billing_country", "shipping_country", "ip_country")
RISKY_CATEGORIES: tuple[str, ...] = ("electronics", "gift_card")
