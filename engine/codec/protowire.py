"""Protobuf wire-format primitives for Numba kernels, with upb's rules (the parser behind the
Python protobuf package): varints, tags, length-delimited values, skipping unknown fields
(groups included). Every read is checked against the end it is given, since Numba checks no
bounds. `engine.codec.order_decoder` and `engine.codec.score_batch` are built on them.
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit, njit_inline

MAX_DEPTH = 100
"""upb's nesting limit below the top message (sub-messages and groups), as Python sets it."""

# Error codes of malformed bytes: protobuf would refuse to parse the message.
E_VARINT, E_TAG, E_LENGTH, E_FIXED, E_WIRE_TYPE = 1, 2, 3, 4, 5
E_FIELD_ZERO, E_END_GROUP, E_OPEN_GROUP, E_DEPTH, E_UTF8 = 6, 7, 8, 9, 10
E_SPAN = 19  # a span outside the buffer: the caller's bug
WIRE_ERRORS = {
    E_VARINT: "truncated or over-long varint",
    E_TAG: "bad tag",
    E_LENGTH: "length runs past the end of the message",
    E_FIXED: "truncated fixed-width value",
    E_WIRE_TYPE: "invalid wire type",
    E_FIELD_ZERO: "field number 0",
    E_END_GROUP: "unexpected end-group tag",
    E_OPEN_GROUP: "unterminated group",
    E_DEPTH: f"nested deeper than {MAX_DEPTH} levels",
    E_UTF8: "a replaced string value is not valid UTF-8",
}


@njit_inline
def varint(buf, pos, end):
    """(value, position after); position -1 past `end` or over 10 bytes. Bits beyond 64 in
    a 10th byte are dropped, as upb drops them."""
    value = np.uint64(0)
    for k in range(10):
        if pos >= end:
            return value, -1
        byte = buf[pos]
        pos += 1
        value |= np.uint64(byte & 0x7F) << np.uint64(7 * k)
        if byte < 0x80:
            return value, pos
    return value, -1


@njit_inline
def tag(buf, pos, end):
    """(field number, wire type, position after); position -1 unless, as upb wants, the tag
    takes at most 5 bytes and 32 bits."""
    value, after = varint(buf, pos, end)
    if after < 0 or after - pos > 5 or value > np.uint64(0xFFFFFFFF):
        return 0, 0, -1
    tag = np.int64(value)
    return tag >> 3, tag & 7, after


@njit_inline
def delimited(buf, pos, end):
    """(start, end, error) of the length-delimited value whose length is at `pos`."""
    size, start = varint(buf, pos, end)
    if start < 0:
        return pos, pos, E_VARINT
    if size >= np.uint64(0x7FFFFFFF) or np.int64(size) > end - start:
        return pos, pos, E_LENGTH
    return start, start + np.int64(size), 0


@njit_inline
def skip_value(buf, pos, end, wire_type):
    """(position after, error) for a value of wire type 0, 1, 2 or 5."""
    if wire_type == 0:
        _, after = varint(buf, pos, end)
        return (pos, E_VARINT) if after < 0 else (after, 0)
    if wire_type == 1 or wire_type == 5:
        width = 8 if wire_type == 1 else 4
        return (pos, E_FIXED) if end - pos < width else (pos + width, 0)
    if wire_type == 2:
        _, after, err = delimited(buf, pos, end)
        return after, err
    return pos, E_WIRE_TYPE


@njit
def skip_field(buf, pos, end, field, wire_type, budget, stack):
    """(position after, error) for an unknown field whose tag ends at `pos`. A group runs to
    its matching end-group tag (open groups on `stack`); `budget` is how many more levels
    upb would enter here. Inside a group upb allows field number 0, so this does too."""
    if field == 0:
        return pos, E_FIELD_ZERO
    if wire_type != 3:
        return skip_value(buf, pos, end, wire_type)
    if budget < 1:
        return pos, E_DEPTH
    top = 0
    stack[0] = field
    while True:
        if pos >= end:
            return pos, E_OPEN_GROUP
        inner, inner_type, after = tag(buf, pos, end)
        if after < 0:
            return pos, E_TAG
        if inner_type == 4:
            if inner != stack[top]:
                return pos, E_END_GROUP
            if top == 0:
                return after, 0
            top -= 1
        elif inner_type == 3:
            if budget < top + 2:
                return pos, E_DEPTH
            top += 1
            stack[top] = inner
        else:
            after, err = skip_value(buf, after, end, inner_type)
            if err:
                return pos, err
        pos = after
