"""Serialized `ordersight.v1.Order` messages to `OrderColumns`, in one Numba kernel.

The server hands over the request bytes; `_parse` walks the wire format with the primitives
of `engine.codec.protowire` and records where each field's value lies (strings as spans into
the request, so nothing is copied) by the field table of `engine.codec.order_fields`. It
validates nothing: `OrderRules.check` does, for this and every other entry point.

Wire semantics are those of upb, the parser behind the Python protobuf package: unknown
fields, and known ones sent with another wire type, are skipped, groups included; the last
value wins for scalars; repeated occurrences of a singular sub-message merge; an int32
(`nanos`) keeps the low 32 bits of its varint, a 10-byte varint the low 64; nesting deeper
than upb's limit fails. What upb refuses to parse marks the row malformed (a code and the
byte offset), never a crash: every read is checked against the enclosing message's end,
since Numba checks no bounds. Strict UTF-8, which upb checks while parsing, is one of the
validator's rules here (the value kept; a value a later occurrence replaces is checked while
parsing, as upb does). tests/codec/test_order_decoder.py checks all of it against protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from engine.codec import order_fields as of
from engine.codec.protowire import (
    E_DEPTH,
    E_END_GROUP,
    E_SPAN,
    E_TAG,
    E_UTF8,
    E_VARINT,
    MAX_DEPTH,
    WIRE_ERRORS,
    delimited,
    skip_field,
    tag,
    varint,
)
from engine.errors import InvalidInput
from engine.jit import njit, njit_inline
from engine.orders.batch import OrderBatch
from engine.orders.columns import OrderColumns, empty_columns
from engine.orders.schema import TIME_SLOT
from engine.orders.validate import utf8_chars

ORDER_DEPTH_IN_BATCH = MAX_DEPTH - 2
"""What is left of upb's nesting limit inside ScoreBatchRequest > OrderList > Order."""

_TIME_SLOT_OF = np.full(7, -1, np.int64)  # the time slot a Timestamp sub-message fills
_TIME_SLOT_OF[of.CREATED] = TIME_SLOT["created_at"]
_TIME_SLOT_OF[of.ACCOUNT] = TIME_SLOT["account_created_at"]


@njit_inline
def _parse_one(buf, lo, hi, depth, kind_t, arg_t, int_t, time_slot_of, i, spans, times,
               amount_minor, key_account, item_spans, item_ints, m, frames, stack):  # fmt: skip
    """Read the Order at buf[lo:hi] into row i; items from m on. Returns (error, offset, m)."""
    d = 0
    frames[0, 0], frames[0, 1] = of.ORDER, hi
    pos = lo
    while True:
        end = frames[d, 1]
        if pos >= end:  # the message in frame d ends
            if d == 0:
                return 0, 0, m
            d -= 1
            continue
        field, wire_type, after = tag(buf, pos, end)
        if after < 0:
            return E_TAG, pos, m
        msg = frames[d, 0]
        kind = kind_t[msg, field] if field < kind_t.shape[1] else of.UNKNOWN
        arg = arg_t[msg, field] if field < kind_t.shape[1] else 0
        err = 0
        if wire_type == 4:
            err = E_END_GROUP
        elif wire_type == 2 and (kind == of.STRING or kind == of.ITEM_STRING or kind == of.MESSAGE):
            start, stop, err = delimited(buf, after, end)
            if err == 0 and kind == of.STRING:
                if utf8_chars(buf, spans[arg, 0, i], spans[arg, 1, i]) < 0:
                    return E_UTF8, spans[arg, 0, i], m  # upb checks the value it replaces
                spans[arg, 0, i], spans[arg, 1, i] = start, stop
                after = stop
            elif err == 0 and kind == of.ITEM_STRING:
                lo_, hi_ = item_spans[arg, 0, m - 1], item_spans[arg, 1, m - 1]
                if utf8_chars(buf, lo_, hi_) < 0:
                    return E_UTF8, lo_, m
                item_spans[arg, 0, m - 1], item_spans[arg, 1, m - 1] = start, stop
                after = stop
            elif err == 0 and d == depth:
                err = E_DEPTH
            elif err == 0:
                d += 1
                frames[d, 0], frames[d, 1] = arg, stop
                after = start
                if time_slot_of[arg] >= 0:
                    times[time_slot_of[arg], 2, i] = 1
                elif arg == of.ITEM:
                    item_spans[:, :, m] = 0
                    item_ints[:, m] = 0
                    m += 1
        elif wire_type == 0 and (kind == of.INT64 or kind == of.INT32 or kind == of.BOOL):
            value, after = varint(buf, after, end)
            if after < 0:
                err = E_VARINT
            else:
                v = np.int64(value)
                if kind == of.INT32:
                    low = np.int64(value & np.uint64(0xFFFFFFFF))
                    v = low - (1 << 32) if low >= (1 << 31) else low
                elif kind == of.BOOL:
                    v = 1 if value != 0 else 0
                target = int_t[msg, field]
                if target == of.AMOUNT:
                    amount_minor[i] = v
                elif target == of.KEY_ACCOUNT:
                    key_account[i] = v != 0
                elif target == of.ITEM_INT:
                    item_ints[arg, m - 1] = v
                else:
                    times[arg // 3, arg % 3, i] = v
        else:
            after, err = skip_field(buf, after, end, field, wire_type, depth - d, stack)
        if err:
            return err, pos, m
        pos = after


@njit
def _parse(buf, starts, ends, depth, kind_t, arg_t, int_t, time_slot_of, spans, times,
           amount_minor, key_account, item_rows, item_spans, item_ints, malformed):  # fmt: skip
    """Every message into its row; returns the item arrays (as many items as item_rows[n]
    says) and how many spans lay outside the buffer."""
    frames = np.zeros((depth + 1, 2), np.int64)
    stack = np.zeros(depth + 1, np.int64)
    m = n_outside = 0
    for i in range(starts.shape[0]):
        lo, hi = starts[i], ends[i]
        item_rows[i] = m
        if lo < 0 or hi < lo or hi > buf.shape[0]:
            malformed[i, 0], malformed[i, 1] = E_SPAN, 0
            n_outside += 1
            item_rows[i + 1] = m
            continue
        need = m + (hi - lo) // 2 + 1  # an item takes at least two bytes
        if need > item_ints.shape[1]:
            size = max(need, 2 * item_ints.shape[1])
            grown_spans = np.zeros((item_spans.shape[0], 2, size), np.int64)
            grown_spans[:, :, :m] = item_spans[:, :, :m]
            grown_ints = np.zeros((2, size), np.int64)
            grown_ints[:, :m] = item_ints[:, :m]
            item_spans, item_ints = grown_spans, grown_ints
        err, at, m_after = _parse_one(
            buf, lo, hi, depth, kind_t, arg_t, int_t, time_slot_of, i, spans, times,
            amount_minor, key_account, item_spans, item_ints, m, frames, stack,
        )  # fmt: skip
        if err:  # an empty order: nothing of it is kept
            malformed[i, 0], malformed[i, 1] = err, at - lo
            spans[:, :, i] = 0
            times[:, :, i] = 0
            amount_minor[i] = 0
            key_account[i] = False
        else:
            m = m_after
        item_rows[i + 1] = m
    return item_spans[:, :, :m].copy(), item_ints[:, :m].copy(), n_outside


@njit
def _any_bad_utf8(cols):
    """Whether any string of any order is not strict UTF-8 (what upb refuses while parsing)."""
    for s in range(cols.spans.shape[0]):
        for i in range(cols.spans.shape[2]):
            if utf8_chars(cols.buf, cols.spans[s, 0, i], cols.spans[s, 1, i]) < 0:
                return True
    for s in range(cols.item_spans.shape[0]):
        for j in range(cols.item_spans.shape[2]):
            if utf8_chars(cols.buf, cols.item_spans[s, 0, j], cols.item_spans[s, 1, j]) < 0:
                return True
    return False


def parses(cols: OrderColumns) -> bool:
    """Whether protobuf would parse all these orders: none malformed, all strings UTF-8."""
    return not cols.malformed[:, 0].any() and not _any_bad_utf8(cols)


def decode_spans(
    buf: bytes | bytearray, starts: np.ndarray, ends: np.ndarray, depth: int = MAX_DEPTH
) -> OrderColumns:
    """Columns of the Orders serialized at buf[starts[i]:ends[i]], each parsed on its own.

    `depth` is how many nesting levels upb would still enter below each Order: MAX_DEPTH for
    a top-level message, ORDER_DEPTH_IN_BATCH inside a ScoreBatchRequest. Raises ValueError
    for a span outside `buf` (the caller's bug)."""
    if not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must lie in [0, {MAX_DEPTH}], is {depth}")
    if len(starts) != len(ends):
        raise ValueError(f"starts and ends must be equally long, are {len(starts)}, {len(ends)}")
    starts, ends = (np.ascontiguousarray(x, np.int64) for x in (starts, ends))
    data = np.frombuffer(buf, np.uint8) if len(buf) else np.zeros(1, np.uint8)
    n = len(starts)
    cols = empty_columns(n, 16, data)
    item_spans, item_ints, n_outside = _parse(
        data, starts, ends, depth, of.KIND, of.ARG, of.INT_TARGET, _TIME_SLOT_OF, cols.spans,
        cols.times, cols.amount_minor, cols.key_account, cols.item_rows, cols.item_spans,
        cols.item_ints, cols.malformed,
    )  # fmt: skip
    if n_outside:
        i = int(np.flatnonzero(cols.malformed[:, 0] == E_SPAN)[0])
        raise ValueError(f"span {i}, [{starts[i]}, {ends[i]}), lies outside the buffer")
    return OrderColumns(
        cols.buf, cols.spans, cols.times, cols.amount_minor, cols.key_account, cols.item_rows,
        item_spans, item_ints, cols.malformed,
    )  # fmt: skip


def decode_orders(messages: Sequence[bytes]) -> OrderColumns:
    """Columns of serialized Orders (say one micro-batch of Score calls)."""
    offsets = np.fromiter(accumulate(map(len, messages), initial=0), np.int64, len(messages) + 1)
    return decode_spans(b"".join(messages), offsets[:-1], offsets[1:])


def refusal(batch: OrderBatch, i: int, prefix: str = "") -> InvalidInput:
    """Refused row i of a batch decoded from protobuf, named by `prefix` + the field's path;
    a message that cannot be parsed is named by the prefix (or "order")."""
    rule, _, _, at, _ = (int(v) for v in batch.errors[i])
    if rule in WIRE_ERRORS:
        where = prefix.rstrip(".") or "order"
        return InvalidInput(
            f"{where}: not a valid Order message ({WIRE_ERRORS[rule]} at byte {at})", where
        )
    return batch.refusal_at(i, prefix)


def first_refusal(batch: OrderBatch, prefix_fmt: str) -> InvalidInput | None:
    """What refuses these messages as one request: a message that cannot be parsed fails the
    whole request, else the first bad order. (Bad UTF-8 in a value kept is a validation rule
    here, where protobuf would refuse the request's parse: the request is refused either way,
    named by the first bad order.) `prefix_fmt` is
    formatted with the row's index `i`."""
    bad = np.flatnonzero(batch.malformed)
    bad = bad if bad.size else np.flatnonzero(~batch.ok)
    if not bad.size:
        return None
    i = int(bad[0])
    return refusal(batch, i, prefix_fmt.format(i=i))
