"""A serialized `ScoreBatchRequest`, taken apart without copying: where its Orders lie, or its
Arrow IPC payload, and whether the answer should be Arrow.

Semantics are protobuf's: the oneof's last member wins, OrderLists in a row merge, and what
protobuf would refuse to parse is refused (InvalidInput, field "request"), except malformed
Orders in the live OrderList, which the order decoder reports per order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.codec.order_decoder import ORDER_DEPTH_IN_BATCH, decode_spans, parses
from engine.codec.protowire import (
    E_END_GROUP,
    E_TAG,
    E_VARINT,
    MAX_DEPTH,
    WIRE_ERRORS,
    delimited,
    skip_field,
    tag,
    varint,
)
from engine.errors import InvalidInput
from engine.jit import njit
from engine.orders.columns import OrderColumns

NO_PAYLOAD, ORDERS, ARROW_IPC = 0, 1, 2


class Split(NamedTuple):
    """What `_split` found (error 0 when the request parses)."""

    error: int
    offset: int
    kind: int  # NO_PAYLOAD, ORDERS or ARROW_IPC
    starts: np.ndarray  # Order spans, in every OrderList seen
    ends: np.ndarray
    live: int  # first Order of the live OrderList (earlier ones were replaced)
    arrow_lo: int
    arrow_hi: int
    arrow_response: bool


@njit
def _split(buf, stack):
    """Walk a ScoreBatchRequest, locating its Orders without parsing them."""
    end = buf.shape[0]
    starts = np.empty(16, np.int64)
    ends = np.empty(16, np.int64)
    m = live = kind = arrow_lo = arrow_hi = pos = 0
    respond_arrow = False
    while pos < end:
        field, wire_type, after = tag(buf, pos, end)
        err = E_TAG if after < 0 else E_END_GROUP if wire_type == 4 else 0
        if err == 0 and field == 1 and wire_type == 2:  # orders: an OrderList; lists merge
            lo, hi, err = delimited(buf, after, end)
            if kind != ORDERS:
                live, kind = m, ORDERS
            q = lo
            while err == 0 and q < hi:
                inner, inner_type, q_after = tag(buf, q, hi)
                if q_after < 0 or inner_type == 4:
                    err = E_TAG if q_after < 0 else E_END_GROUP
                elif inner == 1 and inner_type == 2:
                    o_lo, o_hi, err = delimited(buf, q_after, hi)
                    if m == starts.shape[0]:
                        starts = np.concatenate((starts, np.empty(m, np.int64)))
                        ends = np.concatenate((ends, np.empty(m, np.int64)))
                    starts[m], ends[m] = o_lo, o_hi
                    m += 1  # on error the spans are dropped anyway
                    q_after = o_hi
                else:
                    q_after, err = skip_field(
                        buf, q_after, hi, inner, inner_type, MAX_DEPTH - 1, stack
                    )
                if err:
                    pos = q
                else:
                    q = q_after
            after = hi
        elif err == 0 and field == 2 and wire_type == 2:  # arrow_ipc
            arrow_lo, arrow_hi, err = delimited(buf, after, end)
            kind, live, after = ARROW_IPC, m, arrow_hi
        elif err == 0 and field == 3 and wire_type == 0:  # arrow_response
            value, after = varint(buf, after, end)
            err = E_VARINT if after < 0 else 0
            respond_arrow = value != 0
        elif err == 0:
            after, err = skip_field(buf, after, end, field, wire_type, MAX_DEPTH, stack)
        if err:
            return Split(err, pos, 0, starts[:0], ends[:0], 0, 0, 0, False)
        pos = after
    return Split(0, 0, kind, starts[:m], ends[:m], live, arrow_lo, arrow_hi, respond_arrow)


class BatchRequest(NamedTuple):
    """A ScoreBatchRequest's parts, as views of its bytes."""

    payload: bytes | bytearray
    kind: int  # NO_PAYLOAD, ORDERS or ARROW_IPC
    starts: np.ndarray  # offsets in `payload` of the live OrderList's Orders
    ends: np.ndarray
    arrow_ipc: memoryview | None
    arrow_response: bool

    def order_columns(self) -> OrderColumns:
        return decode_spans(self.payload, self.starts, self.ends, ORDER_DEPTH_IN_BATCH)


def split_score_batch(payload: bytes | bytearray) -> BatchRequest:
    """Locate the parts of a serialized ScoreBatchRequest (see the module docstring)."""
    s = Split(*_split(np.frombuffer(payload, np.uint8), np.empty(MAX_DEPTH + 1, np.int64)))
    err = s.error
    if not err and s.live:  # protobuf parses an OrderList that a later member replaces, too
        replaced = decode_spans(payload, s.starts[: s.live], s.ends[: s.live], ORDER_DEPTH_IN_BATCH)
        err = 0 if parses(replaced) else -1
    if err:
        what = (
            "a replaced OrderList holds a malformed Order"
            if err < 0
            else f"{WIRE_ERRORS[err]} at byte {s.offset}"
        )
        raise InvalidInput(f"request: not a valid ScoreBatchRequest ({what})", "request")
    return BatchRequest(
        payload=payload,
        kind=s.kind,
        starts=s.starts[s.live :],
        ends=s.ends[s.live :],
        arrow_ipc=memoryview(payload)[s.arrow_lo : s.arrow_hi] if s.kind == ARROW_IPC else None,
        arrow_response=bool(s.arrow_response),
    )
