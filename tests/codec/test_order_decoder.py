"""The wire decoder, with the one validator and encoder, equals the protobuf route:
`pb.Order.FromString`, then the oracles of tests/oracle.py (the rule table and the encoding
in plain Python), on generated orders, re-encoded and corrupted bytes, and ScoreBatch requests.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ordersight.v1 import risk_pb2 as pb

from engine.codec import order_fields
from engine.codec.order_decoder import decode_orders, decode_spans, first_refusal, refusal
from engine.codec.protowire import MAX_DEPTH
from engine.codec.score_batch import ARROW_IPC, NO_PAYLOAD, ORDERS, split_score_batch
from engine.errors import InvalidInput
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderBatch, OrderRules
from tests.codec.order_strategies import (
    LATEST,
    TS_MAX,
    batch_requests,
    corrupted,
    serialized,
    valid_orders,
    varint,
)
from tests.grpc_harness import orders_of, simple_order
from tests.oracle import encode_orders, validate_order

RULES = OrderRules()


@dataclasses.dataclass
class Decoded:
    """An OrderBatch with each row's refusal worded as the protobuf route words it."""

    batch: OrderBatch
    prefix_fmt: str

    @property
    def ids(self) -> list[str]:
        return self.batch.ids

    @property
    def channels(self) -> list[str | None]:
        return self.batch.channels

    @property
    def enc(self) -> OrderArrays:
        return self.batch.arrays

    @property
    def ok(self) -> np.ndarray:
        return self.batch.ok

    @property
    def malformed(self) -> np.ndarray:
        return self.batch.malformed

    @property
    def errors(self) -> list[InvalidInput | None]:
        b = self.batch
        return [None if b.ok[i] else refusal(b, i, self.prefix_fmt.format(i=i)) for i in range(b.n)]

    def first_error(self) -> InvalidInput | None:
        return first_refusal(self.batch, self.prefix_fmt)


def decode(raws: list[bytes], latest: float, prefix_fmt: str = "") -> Decoded:
    return Decoded(RULES.check(decode_orders(raws), latest), prefix_fmt)


def decode_parts(parts, latest: float) -> Decoded:  # type: ignore[no-untyped-def]
    return Decoded(RULES.check(parts.order_columns(), latest), "orders.orders[{i}].")


BATCH_PREFIX = "orders.orders[{i}]."

# --- the protobuf route as reference --------------------------------------------------------


def reference(raw: bytes, latest: float, prefix: str = "") -> Any:
    """("malformed",), ("invalid", message, field) or ("ok", id, channel, arrays)."""
    try:
        o = pb.Order.FromString(raw)
    except DecodeError:
        return ("malformed",)
    try:
        validate_order(o, prefix=prefix, latest=latest)
    except InvalidInput as exc:
        return ("invalid", str(exc), exc.field)
    return ("ok", o.order_id, o.channel or None, encode_orders([o]))


def assert_same_arrays(got: OrderArrays, want: dict[str, np.ndarray]) -> None:
    assert got.n == len(want["t"])
    for name, b in want.items():
        a = getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # NaN equals NaN


def assert_matches(dec: Decoded, raws: list[bytes], latest: float, prefix_fmt: str = "") -> None:
    assert len(dec.ids) == len(dec.errors) == dec.enc.n == len(raws)
    for i, raw in enumerate(raws):
        want = reference(raw, latest, prefix_fmt.format(i=i))
        err = dec.errors[i]
        if want[0] == "malformed":  # unparseable, or (a validation rule here) bad UTF-8
            assert isinstance(err, InvalidInput), raw
            where = prefix_fmt.format(i=i).rstrip(".") or "order"
            assert not dec.malformed[i] or err.field == where
        elif want[0] == "invalid":
            assert err is not None and not dec.malformed[i], (raw, want)
            assert (str(err), err.field) == want[1:], raw
        else:
            assert err is None and dec.ok[i], (raw, err)
            assert (dec.ids[i], dec.channels[i]) == (want[1], want[2])
            assert_same_arrays(dec.enc.take(slice(i, i + 1)), want[3])


latests = st.sampled_from([LATEST, float(TS_MAX), 1_769_947_200.5, math.inf])
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(serialized(valid_orders()), min_size=1, max_size=6), latests)
def test_valid_orders_equal_encode_orders(raws: list[bytes], latest: float) -> None:
    assert_matches(decode(raws, latest), raws, latest)


@FAST
@given(st.lists(serialized(), min_size=1, max_size=6), latests)
def test_any_order_equals_the_protobuf_route(raws: list[bytes], latest: float) -> None:
    assert_matches(decode(raws, latest, BATCH_PREFIX), raws, latest, BATCH_PREFIX)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(corrupted(), min_size=1, max_size=4), latests)
def test_corrupted_bytes_fail_where_protobuf_fails(raws: list[bytes], latest: float) -> None:
    assert_matches(decode(raws, latest), raws, latest)


def test_history_orders_equal_encode_orders(history: pa.Table) -> None:
    orders_ = orders_of(history.slice(0, 2000))
    dec = decode([o.SerializeToString() for o in orders_], math.inf)
    enc = encode_orders(orders_)
    assert dec.errors == [None] * len(orders_) and dec.ok.all()
    assert dec.ids == [o.order_id for o in orders_]
    assert dec.channels == [o.channel or None for o in orders_]
    assert_same_arrays(dec.enc, enc)


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"\x0a\x05o-1", "length runs past the end of the message"),
        (b"\x20\xff", "truncated or over-long varint"),
        (b"\x20" + b"\xff" * 10 + b"\x01", "truncated or over-long varint"),
        (b"\x0e", "invalid wire type"),
        (b"\x00\x01", "field number 0"),
        (b"\x0c", "unexpected end-group tag"),
        (b"\x7b\x08\x01", "unterminated group"),
        (b"\x7d\x01\x02", "truncated fixed-width value"),
        (b"\x80\x80\x80\x80\x80\x00", "bad tag"),
    ],
)
def test_malformed_bytes_say_what_is_wrong(raw: bytes, what: str) -> None:
    with pytest.raises(DecodeError):
        pb.Order.FromString(raw)
    for prefix_fmt, field in (("", "order"), (BATCH_PREFIX, "orders.orders[0]")):
        err = decode([raw], LATEST, prefix_fmt).errors[0]
        assert isinstance(err, InvalidInput) and err.field == field
        assert str(err).startswith(f"{field}: not a valid Order message ({what} at byte ")


@pytest.mark.parametrize(
    "extra",
    [
        b"\x7b\x05\x01\x02\x03\x04\x7c",  # field 0 inside a group
        b"\x7b\x03\x04\x7c",  # a group numbered 0 inside a group
        b"\x7b\x03\x7c",  # ... left open
        b"\x3b\x3c",  # customer sent as a group: unknown
        b"\x22\x01\x05",  # amount_minor sent length-delimited: unknown
        b"\x1a\x00",  # an empty created_at is present
        b"\x20" + b"\xff" * 9 + b"\x7f",  # a 10-byte varint keeps the low 64 bits
        b"\x1a\x06\x10\x85\x80\x80\x80\x10",  # nanos keeps the low 32 bits
        b"\x3a\x0b\x10" + b"\x80" * 9 + b"\x01",  # key_account = 2**63 is true
        b"\x3a\x07\x7b\x05\x01\x02\x03\x04\x7c",  # a group inside customer
        b"\x3a\x03\x7b\x00\x01",  # ... unterminated within customer
        b"\xf8\xff\xff\xff\x0f\x00",  # the largest field number
        b"\xf8\xff\xff\xff\x1f\x00",  # a tag past 32 bits
        b"\x0a\xff\xff\xff\xff\x07",  # a length of 2**31 - 1
    ],
)
def test_wire_edge_cases_match_protobuf(extra: bytes) -> None:
    raws = [simple_order().SerializeToString() + extra, extra]
    assert_matches(decode(raws, LATEST), raws, LATEST)


def test_invalid_utf8_names_the_field() -> None:
    good = simple_order(channel="web")
    good.items.add(sku="s", category="books")
    bad_sku = good.SerializeToString() + b"\x6a\x03\x0a\x01\xff"  # items[1].sku = b"\xff"
    err = decode([bad_sku], LATEST, BATCH_PREFIX).errors[0]
    assert err is not None and err.field == "orders.orders[0].items[1].sku"
    bad_note = simple_order().SerializeToString() + b"\x72\x03\xed\xa0\x80"  # a surrogate
    err = decode([bad_note], LATEST).errors[0]
    assert err is not None and err.field == "note" and str(err) == "note: not valid UTF-8"


def nested_groups(depth: int) -> bytes:
    return varint(15 << 3 | 3) * depth + varint(15 << 3 | 4) * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_nesting_limit_is_upbs(depth: int) -> None:
    order = simple_order().SerializeToString()
    for raw in (
        order + nested_groups(depth),
        order + b"\x3a" + varint(len(nested_groups(depth - 1))) + nested_groups(depth - 1),
    ):
        assert_matches(decode([raw], LATEST), [raw], LATEST)
        order_list = b"\x0a" + varint(len(raw)) + raw
        assert_batch_matches(b"\x0a" + varint(len(order_list)) + order_list, LATEST)


def test_spans_outside_the_buffer_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="outside the buffer"):
        decode_spans(b"\x0a\x01a", np.array([0]), np.array([4]))


def test_empty_batch() -> None:
    dec = decode([], LATEST)
    assert dec.enc.n == 0 and dec.ids == [] and dec.first_error() is None


def test_failed_rows_hold_an_empty_order_and_take_drops_them() -> None:
    good, bad = simple_order("a", channel="app"), simple_order("")
    dec = decode([bad.SerializeToString(), good.SerializeToString()], LATEST)
    assert dec.ok.tolist() == [False, True]
    assert dec.ids == ["", "a"] and dec.channels == [None, "app"]
    assert_same_arrays(dec.enc.take(dec.ok), encode_orders([good]))
    assert str(dec.first_error()) == str(dec.errors[0])


# --- ScoreBatchRequest ------------------------------------------------------------------


def assert_batch_matches(raw: bytes, latest: float) -> None:
    """split_score_batch + decode equal ScoreBatchRequest.FromString + validate_order."""
    try:
        request = pb.ScoreBatchRequest.FromString(raw)
    except DecodeError:
        request = None
    try:
        parts = split_score_batch(raw)
    except InvalidInput as exc:
        assert request is None, raw
        assert exc.field == "request"
        return
    dec = decode_parts(parts, latest)
    if request is None:  # unparseable, or (a validation rule here) bad UTF-8
        assert not dec.ok.all(), raw
        return
    assert not dec.malformed.any(), raw
    kinds = {NO_PAYLOAD: None, ORDERS: "orders", ARROW_IPC: "arrow_ipc"}
    assert kinds[parts.kind] == request.WhichOneof("payload")
    assert parts.arrow_response == request.arrow_response
    want_arrow = request.arrow_ipc if parts.kind == ARROW_IPC else None
    assert (None if parts.arrow_ipc is None else bytes(parts.arrow_ipc)) == want_arrow
    orders_ = list(request.orders.orders) if parts.kind == ORDERS else []
    assert [
        pb.Order.FromString(raw[a:b]) for a, b in zip(parts.starts, parts.ends, strict=True)
    ] == orders_
    first = None
    for i, o in enumerate(orders_):
        try:
            validate_order(o, prefix=BATCH_PREFIX.format(i=i), latest=latest)
        except InvalidInput as exc:
            first = first or exc
    got = dec.first_error()
    assert (None if got is None else (str(got), got.field)) == (
        None if first is None else (str(first), first.field)
    )
    valid = [o for o, e in zip(orders_, dec.errors, strict=True) if e is None]
    if valid:
        assert_same_arrays(dec.enc.take(dec.ok), encode_orders(valid))


@FAST
@given(batch_requests(), latests)
def test_score_batch_requests_equal_the_protobuf_route(raw: bytes, latest: float) -> None:
    assert_batch_matches(raw, latest)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_requests(), st.integers(0, 10**6), st.binary(min_size=1, max_size=3), latests)
def test_corrupted_score_batch_requests(raw: bytes, k: int, junk: bytes, latest: float) -> None:
    k = k % (len(raw) + 1)
    for mutated in (raw[:k], raw[:k] + junk + raw[k:], raw[:k] + junk + raw[k + len(junk) :]):
        assert_batch_matches(mutated, latest)


def test_score_batch_first_bad_order_is_validate_orders() -> None:
    good, bad = simple_order("a"), simple_order("b", currency="usd")
    request = pb.ScoreBatchRequest(orders=pb.OrderList(orders=[good, bad, pb.Order()]))
    err = decode_parts(split_score_batch(request.SerializeToString()), LATEST).first_error()
    with pytest.raises(InvalidInput) as want:
        validate_order(bad, prefix="orders.orders[1].", latest=LATEST)
    assert err is not None and (str(err), err.field) == (str(want.value), want.value.field)


def test_replaced_order_list_is_still_parsed() -> None:
    """protobuf refuses a malformed Order even in an OrderList a later arrow_ipc replaces."""
    bad_list = b"\x0a\x03\x0a\x01\xff"  # orders { orders: <b"\xff"> }
    raw = bad_list + pb.ScoreBatchRequest(arrow_ipc=b"x").SerializeToString()
    with pytest.raises(DecodeError):
        pb.ScoreBatchRequest.FromString(raw)
    with pytest.raises(InvalidInput, match="replaced OrderList"):
        split_score_batch(raw)


def test_field_table_matches_risk_proto() -> None:
    """Every field of Order and its sub-messages is in the decoder's table, by number."""
    messages = {
        order_fields.ORDER: pb.Order.DESCRIPTOR, order_fields.CUSTOMER: pb.Customer.DESCRIPTOR,
        order_fields.PAYMENT: pb.Payment.DESCRIPTOR, order_fields.SHIPPING: pb.Shipping.DESCRIPTOR,
        order_fields.ITEM: pb.Item.DESCRIPTOR,
    }  # fmt: skip
    table = {(m, n) for m, n, _, _ in order_fields.FIELDS}
    for m, desc in messages.items():
        assert {(m, f.number) for f in desc.fields} <= table, desc.name
        assert max(f.number for f in desc.fields) < order_fields.MAX_FIELD


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (lambda o: setattr(o, "order_id", "x" * 129), "order_id", "129 bytes, at most 128"),
        (lambda o: setattr(o, "note", "n" * 4097), "note", "4,097 bytes, at most 4,096"),
        (lambda o: setattr(o, "currency", "XXX"), "currency", "not an ISO 4217 currency"),
        (lambda o: setattr(o, "currency", "ZZZ"), "currency", "not an ISO 4217 currency"),
        (lambda o: setattr(o, "ip_country", "USAXX"), "ip_country", "not an ISO 3166-1 alpha-2"),
        (lambda o: o.created_at.FromSeconds(0), "created_at", "before 2000-01-01"),
        (lambda o: o.customer.account_created_at.FromSeconds(253402300000),
         "customer.account_created_at", "in the future"),
        (lambda o: setattr(o, "amount_minor", 2**63 - 1), "amount_minor",
         "at most 1,000,000,000,000"),
        (lambda o: o.items.add(quantity=10**6, unit_price_minor=10**7), "items[0]",
         "quantity x unit_price_minor"),
        (lambda o: o.items.add(quantity=-1), "items[0].quantity", "must be >= 0, is -1"),
        (lambda o: o.items.extend([pb.Item(sku="s")] * 1001), "items",
         "1,001 items, at most 1,000"),
    ],
)  # fmt: skip
def test_each_limit_names_the_field_and_the_rule(change: Any, field: str, message: str) -> None:
    o = simple_order()
    change(o)
    err = decode([o.SerializeToString()], LATEST, BATCH_PREFIX).errors[0]
    assert err is not None and err.field == "orders.orders[0]." + field, err
    assert message in str(err) and str(err).startswith(f"orders.orders[0].{field}: ")
    with pytest.raises(InvalidInput) as want:  # the oracle words it the same
        validate_order(o, BATCH_PREFIX.format(i=0), LATEST)
    assert str(want.value) == str(err)


def test_overlapping_spans_are_encoded_without_overrun() -> None:
    """The same message named 50 times: ids and channels are gathered into a text sized
    from the spans, not from the buffer."""
    raw = simple_order("o" * 100, channel="c" * 100).SerializeToString()
    dec = RULES.check(decode_spans(raw, np.zeros(50, np.int64), np.full(50, len(raw))), LATEST)
    assert dec.ids == ["o" * 100] * 50 and dec.channels == ["c" * 100] * 50
