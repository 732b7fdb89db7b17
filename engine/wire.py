"""Serialized `ordersight.v1.Order` messages straight to the engine's arrays, in one kernel.

The protobuf route parses into `pb.Order`, then `convert.validate_order` and
`convert.encode_orders` walk the Python objects. Here the server hands over the request
bytes and one Numba kernel per micro-batch walks the wire format, validates, hashes and
writes the `Encoded` arrays; Python only cuts the order_id and channel strings out of one
decoded text and, for bad messages, words the error. `make bench`'s stage table has this
decoder's cost per order ("decode"); `python -m benchmarks.codecs` sets it beside the
protobuf route's. Most of its fixed cost is Python: the dozen arrays and views `Encoded`
holds, the kernel's 23 arguments, the id and channel lists.

The kernels are in `engine.wire_kernels` (the Order's fields) and `engine.protowire` (the
wire format); this module is their Python side. Parity with the protobuf route is the
contract, checked by tests/test_wire.py with Hypothesis (which would also catch the kernels'
`_FIELDS` table out of step with risk.proto):

- Wire semantics are those of upb, the parser behind the Python protobuf package: unknown
  fields, and known ones sent with another wire type, are skipped, groups included; the last
  value wins for scalars; repeated occurrences of a singular sub-message merge; an int32
  (`nanos`) keeps the low 32 bits of its varint, a 10-byte varint the low 64; strings must be
  strict UTF-8; nesting deeper than upb's limit fails. What upb refuses gives `InvalidInput`,
  never a crash: every read is checked against the enclosing message's end, since Numba
  checks no bounds.
- Validation is `convert.validate_order`'s: the same checks in the same order, with the same
  message and field name. A message protobuf cannot parse gets its own wording, field
  "order" (or the prefix), or the string's path for bad UTF-8.
- The arrays equal `convert.encode_orders`'s bit for bit: the same FNV-1a/splitmix hashes
  and salts (`encode._mix64` itself), the same float operations in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from engine.convert import _TS_MAX, _TS_MIN, check_timestamp
from engine.encode import (
    ENTITY_KINDS,
    Encoded,
)
from engine.errors import InvalidInput
from engine.protowire import _E_SPAN, _E_UTF8, _WIRE_ERRORS, MAX_DEPTH
from engine.wire_kernels import (
    _CURRENCIES,
    _DEFAULT_EXPONENT,
    _HASH_SALTS,
    _HASH_SLOTS,
    _PAIR_COLS,
    _PAIR_SALTS,
    _RISKY,
    _RISKY_OFFSETS,
    _STRINGS,
    _V_ACCOUNT,
    _V_AMOUNT,
    _V_CREATED,
    _V_CREATED_MISSING,
    _V_CURRENCY,
    _V_CUSTOMER_ID,
    _V_ORDER_ID,
    _V_QUANTITY,
    ORDER_DEPTH_IN_BATCH,
    _decode,
    _split,
)


@dataclass(slots=True)
class Decoded:
    """Orders decoded from their bytes, one row per message, in input order.

    A message that failed has its `errors` entry, an empty id, no channel and an empty
    order's values in `enc`; `ok` selects the others (`enc.take(decoded.ok)`)."""

    ids: list[str]
    channels: list[str | None]
    enc: Encoded
    errors: list[InvalidInput | None]
    codes: np.ndarray  # int64 error code per row, 0 for none

    @property
    def ok(self) -> np.ndarray:
        return self.codes == 0

    @property
    def malformed(self) -> np.ndarray:
        """Messages protobuf would refuse to parse (the others failed validation, if at all)."""
        return (self.codes > 0) & (self.codes < _V_ORDER_ID)

    def first_error(self) -> InvalidInput | None:
        """What parsing all these messages as one request, then validating, raises first:
        a message protobuf cannot parse fails the whole request, else the first bad order."""
        bad = np.flatnonzero(self.malformed)
        bad = bad if bad.size else np.flatnonzero(self.codes)
        return self.errors[int(bad[0])] if bad.size else None


def decode_orders(messages: Sequence[bytes], latest: float, prefix_fmt: str = "") -> Decoded:
    """Serialized Orders (say one micro-batch of Score calls), each judged on its own.

    `latest` bounds created_at as in `validate_order`. `prefix_fmt`, formatted with the
    message's index `i`, prefixes error fields, e.g. "orders.orders[{i}]."."""
    offsets = np.fromiter(accumulate(map(len, messages), initial=0), np.int64, len(messages) + 1)
    return _decode_spans(
        b"".join(messages), offsets[:-1], offsets[1:], latest, prefix_fmt, MAX_DEPTH
    )


def decode_spans(
    buf: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    latest: float,
    prefix_fmt: str = "",
    depth: int = MAX_DEPTH,
) -> Decoded:
    """The Orders serialized at buf[starts[i]:ends[i]], each judged on its own.

    `depth` is how many nesting levels upb would still enter below each Order: MAX_DEPTH for
    a top-level message, ORDER_DEPTH_IN_BATCH inside a ScoreBatchRequest. Raises ValueError
    for a span outside `buf`."""
    if not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must lie in [0, {MAX_DEPTH}], is {depth}")
    if len(starts) != len(ends):
        raise ValueError(f"starts and ends must be equally long, are {len(starts)}, {len(ends)}")
    starts, ends = (np.ascontiguousarray(x, np.int64) for x in (starts, ends))
    return _decode_spans(buf, starts, ends, latest, prefix_fmt, depth)


def _decode_spans(
    buf: bytes, starts: np.ndarray, ends: np.ndarray, latest: float, prefix_fmt: str, depth: int
) -> Decoded:
    """The kernel writes row blocks (f: t, amount, age, lines, units, risky share, note
    length; errors: code, item, a, b) whose rows become Encoded's arrays as views, plus the
    ids and channels as one text with code-point offsets: slicing one decoded str costs
    less than decoding a bytes slice per string."""
    n = len(starts)
    f = np.empty((7, n))
    amount_minor = np.empty(n, np.int64)
    keys = np.empty((n, len(ENTITY_KINDS)), np.uint64)
    countries = np.empty((3, n), np.uint64)
    key_account = np.empty(n, np.bool_)
    text = np.empty(len(buf), np.uint8)
    chars = np.empty(2 * n + 1, np.int64)
    errors = np.empty((4, n), np.int64)
    n_bad, written = _decode(
        np.frombuffer(buf, np.uint8), starts, ends, float(latest), depth, _TS_MIN, _TS_MAX,
        _HASH_SLOTS, _HASH_SALTS, _PAIR_COLS, _PAIR_SALTS, _CURRENCIES, _DEFAULT_EXPONENT,
        _RISKY, _RISKY_OFFSETS, f, amount_minor, keys, countries, key_account, text, chars,
        errors,
    )  # fmt: skip
    s = text[:written].tobytes().decode()
    c = chars.tolist()
    ids = [s[a:b] for a, b in zip(c[0::2], c[1::2], strict=False)]
    channels = [s[a:b] or None for a, b in zip(c[1::2], c[2::2], strict=True)]
    wordings: list[InvalidInput | None] = [None] * n
    for i in np.flatnonzero(errors[0]).tolist() if n_bad else ():
        code, item, a, b = errors[:, i].tolist()
        if code == _E_SPAN:
            raise ValueError(f"span {i}, [{starts[i]}, {ends[i]}), lies outside the buffer")
        wordings[i] = _error(code, item, a, b, buf, prefix_fmt.format(i=i), latest)
    t, amount, age, n_lines, n_units, risky, note_len = f
    enc = Encoded(
        n=n,
        t=t,
        amount=amount,
        amount_minor=amount_minor,
        account_age_days=age,
        key_account=key_account,
        keys=keys,
        billing_country=countries[0],
        shipping_country=countries[1],
        ip_country=countries[2],
        n_lines=n_lines,
        n_units=n_units,
        risky_share=risky,
        note_len=note_len,
    )
    return Decoded(ids, channels, enc, wordings, errors[0])


def _error(
    code: int, item: int, a: int, b: int, buf: bytes, prefix: str, latest: float
) -> InvalidInput:
    """The InvalidInput for one failed message, worded as validate_order words it."""
    if code < _E_UTF8:
        where = prefix.rstrip(".") or "order"
        return InvalidInput(
            f"{where}: not a valid Order message ({_WIRE_ERRORS[code]} at byte {a})", where
        )
    if code == _E_UTF8:
        path = prefix + _STRINGS[b].replace("items.", f"items[{item}].")
        return InvalidInput(f"{path}: not valid UTF-8", path)
    required = {
        _V_ORDER_ID: "order_id",
        _V_CUSTOMER_ID: "customer_id",
        _V_CREATED_MISSING: "created_at",
    }
    if code in required:
        return InvalidInput(f"{prefix}{required[code]}: required", f"{prefix}{required[code]}")
    if code in (_V_CREATED, _V_ACCOUNT):  # check_timestamp words these
        try:
            if code == _V_CREATED:
                check_timestamp(Timestamp(seconds=a, nanos=b), f"{prefix}created_at", latest)
            else:
                check_timestamp(
                    Timestamp(seconds=a, nanos=b), f"{prefix}customer.account_created_at"
                )
        except InvalidInput as exc:
            return exc
        raise AssertionError(f"the kernel and check_timestamp disagree on ({a}, {b})")
    if code == _V_AMOUNT:
        return InvalidInput(f"{prefix}amount_minor: must be >= 0, is {a}", f"{prefix}amount_minor")
    if code == _V_CURRENCY:
        currency = buf[a:b].decode()
        return InvalidInput(
            f"{prefix}currency: must be a 3-letter ISO 4217 code in capitals, is {currency!r}",
            f"{prefix}currency",
        )
    field = f"{prefix}items[{item}].{'quantity' if code == _V_QUANTITY else 'unit_price_minor'}"
    return InvalidInput(f"{field}: must be >= 0, is {a}", field)


@dataclass(frozen=True)
class BatchParts:
    """A serialized ScoreBatchRequest's fields, located in its bytes without copying."""

    payload: bytes
    kind: str | None  # "orders", "arrow_ipc" or None, as WhichOneof("payload") says
    starts: np.ndarray  # int64 offsets in `payload` of the Orders in orders.orders
    ends: np.ndarray
    arrow_ipc: memoryview | None
    arrow_response: bool

    def decode(self, latest: float) -> Decoded:
        """The orders, errors worded as ScoreBatch words them ("orders.orders[i]....")."""
        return _decode_spans(
            self.payload,
            self.starts,
            self.ends,
            latest,
            "orders.orders[{i}].",
            ORDER_DEPTH_IN_BATCH,
        )


def split_score_batch(payload: bytes) -> BatchParts:
    """Locate the payload of a serialized ScoreBatchRequest, with protobuf's semantics: the
    oneof's last member wins, OrderLists in a row merge.

    Raises InvalidInput (field "request") where protobuf would refuse the request, except for
    malformed Orders in the live OrderList: `BatchParts.decode` finds those."""
    err, pos, kind, starts, ends, live, arrow_lo, arrow_hi, respond_arrow = _split(
        np.frombuffer(payload, np.uint8), np.empty(MAX_DEPTH + 1, np.int64)
    )
    if not err and live:  # protobuf parses an OrderList that a later member replaces, too
        replaced = _decode_spans(
            payload, starts[:live], ends[:live], np.inf, "", ORDER_DEPTH_IN_BATCH
        )
        err = -1 if replaced.malformed.any() else 0
    if err:
        what = (
            "a replaced OrderList holds a malformed Order"
            if err < 0
            else f"{_WIRE_ERRORS[err]} at byte {pos}"
        )
        raise InvalidInput(f"request: not a valid ScoreBatchRequest ({what})", "request")
    return BatchParts(
        payload=payload,
        kind=(None, "orders", "arrow_ipc")[kind],
        starts=starts[live:],
        ends=ends[live:],
        arrow_ipc=memoryview(payload)[arrow_lo:arrow_hi] if kind == 2 else None,
        arrow_response=bool(respond_arrow),
    )


def warm() -> None:
    """Compile the kernels, or load them from Numba's cache, on one tiny valid order."""
    from ordersight.v1 import risk_pb2 as pb

    order = pb.Order(order_id="w", customer_id="c", amount_minor=1, currency="USD")
    order.created_at.seconds = 1
    decode_orders([order.SerializeToString()], latest=float(_TS_MAX))
    request = pb.ScoreBatchRequest(orders=pb.OrderList(orders=[order]))
    split_score_batch(request.SerializeToString()).decode(latest=float(_TS_MAX))
