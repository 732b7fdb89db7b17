"""The wire decoder's field table: where each field of `ordersight.v1.Order` goes in
`OrderColumns`. One row per protobuf field; tests/codec/test_order_decoder.py checks it
against the generated descriptor, so it cannot drift from risk.proto.
"""

from __future__ import annotations

import numpy as np

from engine.orders.columns import NANOS, QUANTITY, SECONDS, UNIT_PRICE
from engine.orders.schema import ITEM_STRING_SLOT, STRING_SLOT, TIME_SLOT

# Message types (the two Timestamps differ by where they sit) and field kinds.
ORDER, CUSTOMER, PAYMENT, SHIPPING, ITEM, CREATED, ACCOUNT = range(7)
UNKNOWN, STRING, ITEM_STRING, INT64, INT32, BOOL, MESSAGE = range(7)
# Integer targets.
AMOUNT, KEY_ACCOUNT, ITEM_INT, TIME = range(4)

MAX_FIELD = 16
"""Field numbers at or above this are unknown in every message of the table."""

FIELDS: tuple[tuple[int, int, int, str], ...] = (
    # (message, field number, kind, column of engine.orders.schema or sub-message)
    (ORDER, 1, STRING, "order_id"),
    (ORDER, 2, STRING, "customer_id"),
    (ORDER, 3, MESSAGE, "created_at"),
    (ORDER, 4, INT64, "amount_minor"),
    (ORDER, 5, STRING, "currency"),
    (ORDER, 6, STRING, "channel"),
    (ORDER, 7, MESSAGE, "customer"),
    (ORDER, 8, MESSAGE, "payment"),
    (ORDER, 9, MESSAGE, "shipping"),
    (ORDER, 10, STRING, "ip"),
    (ORDER, 11, STRING, "ip_country"),
    (ORDER, 12, STRING, "device_id"),
    (ORDER, 13, MESSAGE, "items"),
    (ORDER, 14, STRING, "note"),
    (CUSTOMER, 1, MESSAGE, "account_created_at"),
    (CUSTOMER, 2, BOOL, "key_account"),
    (CUSTOMER, 3, STRING, "email_domain"),
    (PAYMENT, 1, STRING, "payment_method"),
    (PAYMENT, 2, STRING, "card_bin"),
    (PAYMENT, 3, STRING, "card_fingerprint"),
    (PAYMENT, 4, STRING, "billing_country"),
    (SHIPPING, 1, STRING, "shipping_country"),
    (SHIPPING, 2, STRING, "shipping_postal_code"),
    (SHIPPING, 3, STRING, "address_fingerprint"),
    (ITEM, 1, ITEM_STRING, "sku"),
    (ITEM, 2, ITEM_STRING, "category"),
    (ITEM, 3, INT64, "quantity"),
    (ITEM, 4, INT64, "unit_price_minor"),
    (CREATED, 1, INT64, "seconds"),
    (CREATED, 2, INT32, "nanos"),
    (ACCOUNT, 1, INT64, "seconds"),
    (ACCOUNT, 2, INT32, "nanos"),
)
_SUB = {
    "created_at": CREATED, "customer": CUSTOMER, "payment": PAYMENT, "shipping": SHIPPING,
    "items": ITEM, "account_created_at": ACCOUNT,
}  # fmt: skip


def _target(message: int, kind: int, name: str) -> tuple[int, int]:
    """(arg, sub) for a field: the slot or sub-message type, and for integers which one."""
    if kind == MESSAGE:
        return _SUB[name], 0
    if kind == STRING:
        return STRING_SLOT[name], 0
    if kind == ITEM_STRING:
        return ITEM_STRING_SLOT[name], 0
    if message in (CREATED, ACCOUNT):
        slot = TIME_SLOT["created_at" if message == CREATED else "account_created_at"]
        return slot * 3 + (SECONDS if name == "seconds" else NANOS), TIME
    if message == ITEM:
        return (QUANTITY if name == "quantity" else UNIT_PRICE), ITEM_INT
    return 0, (AMOUNT if name == "amount_minor" else KEY_ACCOUNT)


KIND = np.zeros((7, MAX_FIELD), np.int64)
"""Kind of each (message, field number); 0 is unknown."""
ARG = np.zeros((7, MAX_FIELD), np.int64)
"""Slot, sub-message type, or for TIME integers slot * 3 + (0 seconds, 1 nanos)."""
INT_TARGET = np.zeros((7, MAX_FIELD), np.int64)
"""For integer kinds: AMOUNT, KEY_ACCOUNT, ITEM_INT or TIME."""
for _message, _number, _kind, _name in FIELDS:
    KIND[_message, _number] = _kind
    ARG[_message, _number], INT_TARGET[_message, _number] = _target(_message, _kind, _name)
