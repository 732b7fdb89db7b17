"""Protobuf wire-format primitives for Numba kernels, with upb's rules (the parser behind the
Python protobuf package): varints, tags, length-delimited values, skipping unknown fields
(groups included) and strict UTF-8. Every read is checked against the end it is given, since
Numba checks no bounds. `engine.wire_kernels` builds the Order decoder on them.
"""

from __future__ import annotations

import numpy as np

from engine.jit import njit, njit_inline

MAX_DEPTH = 100
"""upb's nesting limit below the top message (sub-messages and groups), as Python sets it."""

# Error codes of malformed bytes: protobuf would refuse to parse the message.
_E_VARINT, _E_TAG, _E_LENGTH, _E_FIXED, _E_WIRE_TYPE = 1, 2, 3, 4, 5
_E_FIELD_ZERO, _E_END_GROUP, _E_OPEN_GROUP, _E_DEPTH, _E_UTF8 = 6, 7, 8, 9, 10
_E_SPAN = 19  # a span outside the buffer: the caller's bug
_WIRE_ERRORS = {
    _E_VARINT: "truncated or over-long varint",
    _E_TAG: "bad tag",
    _E_LENGTH: "length runs past the end of the message",
    _E_FIXED: "truncated fixed-width value",
    _E_WIRE_TYPE: "invalid wire type",
    _E_FIELD_ZERO: "field number 0",
    _E_END_GROUP: "unexpected end-group tag",
    _E_OPEN_GROUP: "unterminated group",
    _E_DEPTH: f"nested deeper than {MAX_DEPTH} levels",
}


@njit_inline
def _varint(buf, pos, end):
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
def _tag(buf, pos, end):
    """(field number, wire type, position after); position -1 unless, as upb wants, the tag
    takes at most 5 bytes and 32 bits."""
    value, after = _varint(buf, pos, end)
    if after < 0 or after - pos > 5 or value > np.uint64(0xFFFFFFFF):
        return 0, 0, -1
    tag = np.int64(value)
    return tag >> 3, tag & 7, after


@njit_inline
def _delimited(buf, pos, end):
    """(start, end, error) of the length-delimited value whose length is at `pos`."""
    size, start = _varint(buf, pos, end)
    if start < 0:
        return pos, pos, _E_VARINT
    if size >= np.uint64(0x7FFFFFFF) or np.int64(size) > end - start:
        return pos, pos, _E_LENGTH
    return start, start + np.int64(size), 0


@njit_inline
def _skip_value(buf, pos, end, wire_type):
    """(position after, error) for a value of wire type 0, 1, 2 or 5."""
    if wire_type == 0:
        _, after = _varint(buf, pos, end)
        return (pos, _E_VARINT) if after < 0 else (after, 0)
    if wire_type == 1 or wire_type == 5:
        width = 8 if wire_type == 1 else 4
        return (pos, _E_FIXED) if end - pos < width else (pos + width, 0)
    if wire_type == 2:
        _, after, err = _delimited(buf, pos, end)
        return after, err
    return pos, _E_WIRE_TYPE


@njit
def _skip_field(buf, pos, end, field, wire_type, budget, stack):
    """(position after, error) for an unknown field whose tag ends at `pos`. A group runs to
    its matching end-group tag (open groups on `stack`); `budget` is how many more levels
    upb would enter here. Inside a group upb allows field number 0, so this does too."""
    if field == 0:
        return pos, _E_FIELD_ZERO
    if wire_type != 3:
        return _skip_value(buf, pos, end, wire_type)
    if budget < 1:
        return pos, _E_DEPTH
    top = 0
    stack[0] = field
    while True:
        if pos >= end:
            return pos, _E_OPEN_GROUP
        inner, inner_type, after = _tag(buf, pos, end)
        if after < 0:
            return pos, _E_TAG
        if inner_type == 4:
            if inner != stack[top]:
                return pos, _E_END_GROUP
            if top == 0:
                return after, 0
            top -= 1
        elif inner_type == 3:
            if budget < top + 2:
                return pos, _E_DEPTH
            top += 1
            stack[top] = inner
        else:
            after, err = _skip_value(buf, after, end, inner_type)
            if err:
                return pos, err
        pos = after


@njit_inline
def _utf8_chars(buf, lo, hi):
    """Code points in buf[lo:hi] (Python's len), or -1 unless strict UTF-8: overlong forms,
    surrogates and code points past U+10FFFF are refused, by upb and Python alike."""
    n = 0
    i = lo
    while i < hi:
        byte = buf[i]
        n += 1
        if byte < 0x80:
            i += 1
            continue
        if byte < 0xC2 or byte > 0xF4:
            return -1
        need = 1 if byte < 0xE0 else 2 if byte < 0xF0 else 3
        low = 0xA0 if byte == 0xE0 else 0x90 if byte == 0xF0 else 0x80
        high = 0x9F if byte == 0xED else 0x8F if byte == 0xF4 else 0xBF
        if hi - i <= need or buf[i + 1] < low or buf[i + 1] > high:
            return -1
        for j in range(i + 2, i + 1 + need):
            if (buf[j] & 0xC0) != 0x80:
                return -1
        i += need + 1
    return n


@njit_inline
def _equal(buf, lo, hi, other, other_lo, other_hi):
    same = hi - lo == other_hi - other_lo
    j = 0
    while same and j < hi - lo:
        same = buf[lo + j] == other[other_lo + j]
        j += 1
    return same
