"""Decisions straight to serialized `ordersight.v1.Decision` / `ScoreBatchResponse` bytes.

The protobuf route (`convert.decisions_to_pb`, then `SerializeToString`) builds a
`pb.Decision` and its `pb.Reason`s per order, although most orders are plain approvals with
no reasons, triggers or fallback cause (`python -m benchmarks.codecs` times both routes).
Here one Numba kernel writes every row's fixed fields into one buffer, and Python only
prepares the variable parts as UTF-8: the order ids joined into one string (encoded once;
the kernel finds each id's bytes from its length in code points), and, for the few rows that
have them, the reasons, triggers and fallback cause as finished wire fields. Reason texts,
trigger lists and causes repeat, so their encodings are cached. One or two rows, as Score's
micro-batches often are, are written in Python instead (`_row`): preparing the kernel's
arrays costs a fixed amount per call, more than writing two rows in Python
(`python -m benchmarks.codecs` shows both at several batch sizes).

The bytes equal protobuf's (upb's) own serialization, checked by
tests/codec/test_decision_encoder.py: fields in field-number order; proto3 defaults omitted
(0 enums and ints, doubles whose bits are all zero, so -0.0 is written, empty strings and
lists); doubles as little-endian fixed64 with their bits as they are, NaN payloads included;
enums and int64 as varints, negative ones as 10-byte two's complement; strings as strict
UTF-8 (lone surrogates raise `UnicodeEncodeError`, as protobuf raises too).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from itertools import chain, compress
from operator import attrgetter
from typing import Any

import numpy as np

from engine.decision.cascade import Decisions
from engine.decision.reasons import Reason
from engine.jit import njit, njit_inline

# Wire tags (field number << 3 | wire type).
_ORDER_ID, _ACTION, _SCORE, _PATH, _REASONS, _TRIGGERS = 0x0A, 0x10, 0x19, 0x20, 0x2A, 0x32
_MODEL_VERSION, _LATENCY, _RAW, _BASE, _FALLBACK_CAUSE = 0x3A, 0x40, 0x49, 0x51, 0x5A
_BATCH_DECISIONS = 0x0A  # ScoreBatchResponse.decisions
_CODE, _FEATURE, _CONTRIBUTION, _MESSAGE = 0x0A, 0x12, 0x19, 0x22  # Reason's
_SCORE_TAG, _RAW_TAG, _BASE_TAG = bytes((_SCORE,)), bytes((_RAW,)), bytes((_BASE,))

_DOUBLE = struct.Struct("<d")
_ZERO_DOUBLE = bytes(8)  # +0.0, the only double proto3 omits
_CACHE_SIZE = 4096
_PYTHON_ROWS = 2  # up to this many rows, `_row` in Python beats the kernel's fixed cost
_PER_ROW = ("latency_us", "action", "path", "score", "raw", "base")
_INT64_MIN, _INT64_MAX, _UINT64 = -(2**63), 2**63 - 1, 2**64 - 1  # negatives: two's complement
# A row's longest fields besides its strings: the batch framing's tag and length, the order
# id's tag and length, tags and 10-byte varints for action, path and latency_us, three doubles.
_MAX_FIXED = 11 + 11 + 3 * 11 + 3 * 9


def _varint(v: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    out = bytearray()
    while v > 0x7F:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes or a string) with its tag and length."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _string_field(tag: int, s: str) -> bytes:
    """A singular string field: nothing for an empty string, as proto3 omits it."""
    if not s:
        return b""
    b = s.encode()
    return bytes((tag,)) + _varint(len(b)) + b


class _Memo(dict):
    """Encodings by key, computed on a miss. Cleared when full: reason messages carry
    feature values, so a long-running server sees an unbounded stream of distinct texts."""

    def __init__(self, encode: Callable[[Any], Any]) -> None:
        super().__init__()
        self.encode = encode

    def __missing__(self, key: Any) -> Any:
        if len(self) >= _CACHE_SIZE:
            self.clear()
        value = self[key] = self.encode(key)
        return value


def _reason_encodings(texts: tuple[str, str, str]) -> tuple[bytes, bytes, bytes]:
    """A Reason field around its contribution: what goes before and after the 8 bytes of a
    written contribution, and the whole field when the contribution is +0.0 (omitted)."""
    code, feature, message = texts
    head = _string_field(_CODE, code) + _string_field(_FEATURE, feature)
    tail = _string_field(_MESSAGE, message)
    size = len(head) + len(tail)
    return (
        bytes((_REASONS,)) + _varint(size + 9) + head + bytes((_CONTRIBUTION,)),
        tail,
        bytes((_REASONS,)) + _varint(size) + head + tail,
    )


def _triggers_encoding(triggers: tuple[str, ...]) -> bytes:
    """Repeated strings: every element is written, empty ones included."""
    return b"".join(bytes((_TRIGGERS,)) + _varint(len(b)) + b for b in map(str.encode, triggers))


_texts = attrgetter("code", "feature", "message")
_reasons = _Memo(_reason_encodings)
_triggers = _Memo(_triggers_encoding)
_causes = _Memo(lambda s: _string_field(_FALLBACK_CAUSE, s))
_model_versions = _Memo(lambda s: _string_field(_MODEL_VERSION, s))
# The one-row path's varint fields, by value (0 omitted; negatives as 10-byte varints).
_id_heads = _Memo(lambda m: bytes((_ORDER_ID,)) + _varint(m) if m else b"")
_actions = _Memo(lambda v: bytes((_ACTION,)) + _varint(v & _UINT64) if v else b"")
_paths = _Memo(lambda v: bytes((_PATH,)) + _varint(v & _UINT64) if v else b"")
_latencies = _Memo(lambda v: bytes((_LATENCY,)) + _varint(v & _UINT64) if v else b"")
_frames = _Memo(lambda m: bytes((_BATCH_DECISIONS,)) + _varint(m))  # Decision's tag, size


def _middle(reasons: list[Reason], triggers: list[str]) -> bytes:
    """Fields 5 and 6 of one Decision: its reasons, then its review triggers."""
    parts: list[bytes] = []
    for r in reasons:
        before, after, zero = _reasons[_texts(r)]
        c = _DOUBLE.pack(r.contribution)
        if c == _ZERO_DOUBLE:
            parts.append(zero)
        else:
            parts += (before, c, after)
    if triggers:
        parts.append(_triggers[tuple(triggers)])
    return b"".join(parts)


def _extras(d: Decisions) -> tuple[list[int], list[bytes]]:
    """The few rows with reasons, triggers or a fallback cause: (row, middle length, cause
    length) for each, flat, and their blobs (each row's middle, then its cause field)."""
    n = len(d)
    found: set[int] = set()
    for column in (d.reasons, d.triggers, d.causes):
        if any(column):  # a C scan; most columns are all empty (causes above all)
            found.update(compress(range(n), column))
    rows = sorted(found)
    meta: list[int] = []
    blobs: list[bytes] = []
    for i in rows:
        middle = _middle(d.reasons[i], d.triggers[i])
        cause = _causes[d.causes[i]]
        meta += (i, len(middle), len(cause))
        blobs += (middle, cause)
    return meta, blobs


def _check(d: Decisions, latency_us: Sequence[int]) -> None:
    """Every array read by row has a value per row: the kernel checks no bounds."""
    n = len(d)
    lengths = [len(latency_us), len(d.action), len(d.path), len(d.score), len(d.raw), len(d.base)]
    if lengths != [n] * len(lengths):
        name, got = next((k, m) for k, m in zip(_PER_ROW, lengths, strict=True) if m != n)
        raise ValueError(f"{name}: expected {n} values, one per order id, is {got}")


def _encode(d: Decisions, latency_us: Sequence[int], framed: bool) -> tuple[bytes, list[int]]:
    """The kernel's inputs from `d`, then its output: the bytes and each row's end in them."""
    n = len(d)
    if any(d.reasons) or any(d.triggers) or any(d.causes):
        meta, blobs = _extras(d)
    else:
        meta, blobs = [], []
    ids = d.order_ids
    try:
        ints = np.fromiter(chain(latency_us, map(len, ids), meta), np.int64, 2 * n + len(meta))
    except OverflowError as exc:
        raise ValueError(f"latency_us: every value must fit in int64 ({exc})") from None
    mv = _model_versions[d.model_version]
    data = b"".join(["".join(ids).encode(), *blobs, mv])
    # Room for the longest possible fixed fields; np.empty leaves unused pages untouched.
    out = np.empty(len(data) + n * (len(mv) + _MAX_FIXED), np.uint8)
    size = _write(data, ints, out, d.action, d.path, d.score, d.raw, d.base, len(mv), framed)
    return out[:size].tobytes(), ints[n : 2 * n].tolist()


def _row(d: Decisions, i: int, latency_us: int) -> bytes:
    """Row `i` in Python, for micro-batches too small to pay the kernel's fixed cost."""
    if not _INT64_MIN <= latency_us <= _INT64_MAX:
        raise ValueError(f"latency_us: every value must fit in int64, is {latency_us}")
    oid = d.order_ids[i].encode()
    score, raw, base = _DOUBLE.pack(d.score[i]), _DOUBLE.pack(d.raw[i]), _DOUBLE.pack(d.base[i])
    reasons, triggers = d.reasons[i], d.triggers[i]
    return b"".join(
        (
            _id_heads[len(oid)],
            oid,
            _actions[int(d.action[i])],
            _SCORE_TAG + score if score != _ZERO_DOUBLE else b"",
            _paths[int(d.path[i])],
            _middle(reasons, triggers) if reasons or triggers else b"",
            _model_versions[d.model_version],
            _latencies[int(latency_us)],
            _RAW_TAG + raw if raw != _ZERO_DOUBLE else b"",
            _BASE_TAG + base if base != _ZERO_DOUBLE else b"",
            _causes[d.causes[i]],
        )
    )


def decision_bytes(d: Decisions, latency_us: Sequence[int]) -> list[bytes]:
    """Each row as a serialized `pb.Decision`: exactly the bytes of
    `decisions_to_pb(d, latency_us)[i].SerializeToString()`."""
    _check(d, latency_us)
    if len(d) <= _PYTHON_ROWS:
        return [_row(d, i, v) for i, v in enumerate(latency_us)]
    buf, ends = _encode(d, latency_us, framed=False)
    return [buf[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def batch_response_bytes(d: Decisions, latency_us: Sequence[int]) -> bytes:
    """The serialized `pb.ScoreBatchResponse` holding every row's Decision: exactly
    `pb.ScoreBatchResponse(decisions=decisions_to_pb(d, latency_us)).SerializeToString()`."""
    _check(d, latency_us)
    if len(d) <= _PYTHON_ROWS:
        rows = [_row(d, i, v) for i, v in enumerate(latency_us)]
        return b"".join([_frames[len(r)] + r for r in rows])
    return _encode(d, latency_us, framed=True)[0]


def warm() -> None:
    """Compile (or load from Numba's cache) the kernel for the dtypes the pipeline uses."""
    n = _PYTHON_ROWS + 1  # the fewest rows that reach the kernel
    d = Decisions(
        ["wärm"] * n,
        np.full(n, 2, np.int8),
        np.full(n, 0.5),
        np.zeros(n),
        np.full(n, -2.0),
        np.full(n, 3, np.int8),
        [[Reason("HIGH_VALUE", "", 0.0, "High-value order: a human decides")]] * n,
        [["HIGH_VALUE"]] * n,
        ["DEADLINE"] * n,
        "warm",
    )
    decision_bytes(d, [1] * n)
    batch_response_bytes(d, [1] * n)


# --- the kernel ----------------------------------------------------------------------------

_U7, _U7F, _U80 = np.uint64(7), np.uint64(0x7F), np.uint64(0x80)


@njit_inline
def _varint_size(v):
    size = 1
    while v > _U7F:
        v >>= _U7
        size += 1
    return size


@njit_inline
def _put_varint(out, pos, v):
    """Write the varint of uint64 `v` at `pos`; the position after."""
    while v > _U7F:
        out[pos] = np.uint8((v & _U7F) | _U80)
        v >>= _U7
        pos += 1
    out[pos] = np.uint8(v)
    return pos + 1


@njit_inline
def _put_fixed64(out, pos, v):
    for k in range(8):
        out[pos + k] = np.uint8((v >> np.uint64(8 * k)) & np.uint64(0xFF))
    return pos + 8


@njit_inline
def _put_bytes(out, pos, data, start, m):
    for k in range(m):
        out[pos + k] = data[start + k]
    return pos + m


@njit
def _write(data, ints, out, action, path, score, raw, base, mv_len, framed):
    """Every row's Decision, each framed as field 1 of ScoreBatchResponse if `framed`, into
    `out`; returns the bytes written and leaves each row's end in `ints[n : 2 * n]`.

    Python allocates `out` (long enough for any row) and receives the ends in `ints`:
    boxing each array a kernel returns would add about half a microsecond per call.

    `data`: the order ids' UTF-8, then each extra row's middle (reasons and triggers) and
    fallback_cause fields, then the model_version field (its last `mv_len` bytes). `ints`:
    latency_us per row, the ids' lengths in code points per row, then (row, middle length,
    cause length) per extra row, in row order.
    """
    n = action.shape[0]
    n_extra = (ints.shape[0] - 2 * n) // 3
    doubles = np.empty(3, np.float64)
    bits = doubles.view(np.uint64)  # the doubles' bits: +0.0 is omitted, -0.0 is not
    # Pass one: where each order id ends in `data`, and each message's size.
    id_end = np.empty(n, np.int64)
    size = np.empty(n, np.int64)
    p = 0
    j = 0
    for i in range(n):
        start = p
        for _ in range(ints[n + i]):  # a code point's UTF-8 length, from its lead byte
            b = data[p]
            p += 1 if b < 0x80 else (2 if b < 0xE0 else (3 if b < 0xF0 else 4))
        id_end[i] = p
        s = mv_len
        m = p - start
        if m:
            s += 1 + _varint_size(np.uint64(m)) + m
        if action[i] != 0:
            s += 1 + _varint_size(np.uint64(np.int64(action[i])))
        if path[i] != 0:
            s += 1 + _varint_size(np.uint64(np.int64(path[i])))
        if ints[i] != 0:
            s += 1 + _varint_size(np.uint64(ints[i]))
        doubles[0], doubles[1], doubles[2] = score[i], raw[i], base[i]
        for k in range(3):
            if bits[k] != 0:
                s += 9
        if j < n_extra and ints[2 * n + 3 * j] == i:
            s += ints[2 * n + 3 * j + 1] + ints[2 * n + 3 * j + 2]
            j += 1
        size[i] = s
    # Pass two: the bytes, in field-number order.
    q = p  # the extra rows' blobs follow the ids
    mv = len(data) - mv_len
    p = 0
    j = 0
    pos = 0
    for i in range(n):
        if framed:
            out[pos] = _BATCH_DECISIONS
            pos = _put_varint(out, pos + 1, np.uint64(size[i]))
        m = id_end[i] - p
        if m:
            out[pos] = _ORDER_ID
            pos = _put_varint(out, pos + 1, np.uint64(m))
            pos = _put_bytes(out, pos, data, p, m)
        p = id_end[i]
        if action[i] != 0:
            out[pos] = _ACTION
            pos = _put_varint(out, pos + 1, np.uint64(np.int64(action[i])))
        doubles[0], doubles[1], doubles[2] = score[i], raw[i], base[i]
        if bits[0] != 0:
            out[pos] = _SCORE
            pos = _put_fixed64(out, pos + 1, bits[0])
        if path[i] != 0:
            out[pos] = _PATH
            pos = _put_varint(out, pos + 1, np.uint64(np.int64(path[i])))
        cause = 0
        if j < n_extra and ints[2 * n + 3 * j] == i:
            m = ints[2 * n + 3 * j + 1]
            pos = _put_bytes(out, pos, data, q, m)
            q += m
            cause = ints[2 * n + 3 * j + 2]
            j += 1
        pos = _put_bytes(out, pos, data, mv, mv_len)
        if ints[i] != 0:
            out[pos] = _LATENCY
            pos = _put_varint(out, pos + 1, np.uint64(ints[i]))
        if bits[1] != 0:
            out[pos] = _RAW
            pos = _put_fixed64(out, pos + 1, bits[1])
        if bits[2] != 0:
            out[pos] = _BASE
            pos = _put_fixed64(out, pos + 1, bits[2])
        pos = _put_bytes(out, pos, data, q, cause)
        q += cause
        ints[n + i] = pos
    return pos
