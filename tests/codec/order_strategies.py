"""Hypothesis strategies for `ordersight.v1.Order` bytes: generated orders (valid and not),
serializations run together with unknown fields interleaved, corrupted bytes, and
ScoreBatchRequests. Shared by the wire decoder's tests."""

from __future__ import annotations

from hypothesis import strategies as st
from ordersight.v1 import risk_pb2 as pb

from engine.orders.rules import Limits
from engine.orders.schema import RISKY_CATEGORIES

LATEST = 1_800_000_000.0  # 2027-01-15: later created_at values are "in the future"
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799  # Timestamp's range: years 1 to 9999
EARLIEST = Limits().earliest_s
INT64 = st.integers(-(2**63), 2**63 - 1)


text = st.text(st.characters(codec="utf-8"), max_size=12)
ids = st.one_of(st.just(""), st.sampled_from(["o-1", "c-1", "ü-ß", "设备-7", "🙂"]), text)
amounts = st.one_of(st.integers(0, 10**7), INT64)
seconds = st.one_of(
    st.integers(1_700_000_000, 1_800_000_100),
    st.integers(TS_MIN - 2, TS_MIN + 2),
    st.integers(TS_MAX - 2, TS_MAX + 2),
    INT64,
)
nanos = st.one_of(st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, -(2**31), 2**31 - 1]))
currencies = st.one_of(
    st.sampled_from(["USD", "EUR", "JPY", "BHD", "KWD", "usd", "US", "USDX", "", "ÄBC"]), text
)
categories = st.one_of(
    st.sampled_from([*RISKY_CATEGORIES, "books", "", "Electronics", "gift_card "]), text
)


@st.composite
def items(draw: st.DrawFn) -> pb.Item:
    qty = draw(st.one_of(st.integers(0, 20), INT64))
    price = draw(st.one_of(st.integers(0, 10**6), INT64))
    return pb.Item(sku=draw(text), category=draw(categories), quantity=qty, unit_price_minor=price)


@st.composite
def orders(draw: st.DrawFn) -> pb.Order:
    o = pb.Order(
        order_id=draw(ids),
        customer_id=draw(ids),
        amount_minor=draw(amounts),
        currency=draw(currencies),
        channel=draw(st.one_of(st.sampled_from(["", "web", "app"]), text)),
        ip=draw(ids),
        ip_country=draw(st.sampled_from(["", "US", "NG", "RO"])),
        device_id=draw(ids),
        note=draw(st.text(st.characters(codec="utf-8"), max_size=40)),
        items=draw(st.lists(items(), max_size=4)),
    )
    if draw(st.booleans()):
        o.created_at.SetInParent()
        o.created_at.seconds, o.created_at.nanos = draw(seconds), draw(nanos)
    if draw(st.booleans()):
        o.customer.key_account = draw(st.booleans())
        o.customer.email_domain = draw(st.sampled_from(["", "example.com", "mail.ru"]))
        if draw(st.booleans()):
            o.customer.account_created_at.SetInParent()
            o.customer.account_created_at.seconds = draw(seconds)
            o.customer.account_created_at.nanos = draw(nanos)
    if draw(st.booleans()):
        o.payment.method = draw(st.sampled_from(["", "card", "wallet"]))
        o.payment.card_bin = draw(st.sampled_from(["", "411111"]))
        o.payment.card_fingerprint = draw(ids)
        o.payment.billing_country = draw(st.sampled_from(["", "US", "DE"]))
    if draw(st.booleans()):
        o.shipping.country = draw(st.sampled_from(["", "US", "NG"]))
        o.shipping.postal_code = draw(text)
        o.shipping.address_fingerprint = draw(ids)
    return o


@st.composite
def valid_orders(draw: st.DrawFn) -> pb.Order:
    """Orders that mostly pass validation, so the arrays get compared often."""
    o = draw(orders())
    o.order_id = o.order_id or "o"
    o.customer_id = o.customer_id or "c"
    o.created_at.seconds = draw(st.integers(EARLIEST, int(LATEST)))
    o.created_at.nanos = draw(st.integers(0, 999_999_999))
    o.amount_minor = abs(o.amount_minor) % 10**12
    o.currency = draw(st.sampled_from(["USD", "JPY", "BHD", "EUR"]))
    if o.customer.HasField("account_created_at"):
        o.customer.account_created_at.seconds = draw(st.integers(EARLIEST, int(LATEST)))
        o.customer.account_created_at.nanos = draw(st.integers(0, 999_999_999))
    for item in o.items:
        item.quantity = abs(item.quantity) % 10**6
        item.unit_price_minor = abs(item.unit_price_minor) % 10**6
    return o


def varint(v: int) -> bytes:
    v &= 2**64 - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


@st.composite
def unknown_fields(draw: st.DrawFn) -> bytes:
    """Extra fields: unknown numbers and known ones with another wire type (protobuf skips
    both), or known length-delimited ones holding random bytes."""
    number = draw(st.one_of(st.integers(15, 2**29 - 1), st.integers(1, 14)))
    wire_type = draw(st.sampled_from([0, 1, 2, 5, 3]))
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + varint(draw(INT64))
    if wire_type in (1, 5):
        width = 8 if wire_type == 1 else 4
        return tag + draw(st.binary(min_size=width, max_size=width))
    if wire_type == 2:
        payload = draw(st.binary(max_size=10))
        return tag + varint(len(payload)) + payload
    inner = draw(st.lists(st.integers(0, 2**29 - 1), max_size=3))  # field 0 is fine in groups
    body = b"".join(varint(n << 3) + varint(n) for n in inner)
    if draw(st.booleans()):  # a nested group
        body += varint(inner[0] << 3 | 3) + varint(inner[0] << 3 | 4) if inner else b""
    return tag + body + varint(number << 3 | 4)


@st.composite
def serialized(draw: st.DrawFn, base: st.SearchStrategy[pb.Order] | None = None) -> bytes:
    """An Order's bytes: one or more serializations run together (singular sub-messages
    merge, scalars take the last value), unknown fields interleaved."""
    base = orders() if base is None else base
    parts = [draw(base).SerializeToString() for _ in range(draw(st.integers(1, 3)))]
    extra = draw(st.lists(unknown_fields(), max_size=3))
    pieces = parts + extra
    order = draw(st.permutations(range(len(pieces))))
    return b"".join(pieces[k] for k in order)


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    raw = draw(st.one_of(serialized(), serialized(valid_orders())))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
    if how == "random":
        return draw(st.binary(max_size=60))
    if not raw:
        return raw
    k = draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        return raw[:k]
    if how == "flip":
        return raw[:k] + bytes([draw(st.integers(0, 255))]) + raw[k + 1 :]
    return raw[:k] + draw(st.binary(min_size=1, max_size=4)) + raw[k:]


@st.composite
def batch_requests(draw: st.DrawFn) -> bytes:
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["orders", "arrow_ipc", "none"]))
        request = pb.ScoreBatchRequest(arrow_response=draw(st.booleans()))
        if kind == "orders":
            request.orders.orders.extend(
                draw(st.lists(st.one_of(orders(), valid_orders()), max_size=4))
            )
            if not request.orders.orders:
                request.orders.SetInParent()
        elif kind == "arrow_ipc":
            request.arrow_ipc = draw(st.binary(max_size=8))
        pieces.append(request.SerializeToString())
    pieces += draw(st.lists(unknown_fields(), max_size=2))
    return b"".join(draw(st.permutations(pieces)))
