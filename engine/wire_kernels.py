"""The Order decoder's kernels: `ordersight.v1.Order` messages, read with the primitives of
`engine.protowire`, validated as `convert.validate_order` validates and hashed as
`convert.encode_orders` hashes, straight into the engine's arrays (`engine.wire` is the
Python side). The tables below describe risk.proto's Order; tests/test_wire.py would catch
them out of step with it.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np

from engine.encode import (
    _FNV_OFFSET,
    _FNV_PRIME,
    PAIRS,
    RISKY_CATEGORIES,
    THREE_DECIMAL,
    ZERO_DECIMAL,
    _mix64,
    minor_exponent,
)
from engine.jit import njit, njit_inline
from engine.protowire import (
    _E_DEPTH,
    _E_END_GROUP,
    _E_SPAN,
    _E_TAG,
    _E_UTF8,
    _E_VARINT,
    MAX_DEPTH,
    _delimited,
    _equal,
    _skip_field,
    _tag,
    _utf8_chars,
    _varint,
)
from engine.schema import ENTITY_COLUMNS

ORDER_DEPTH_IN_BATCH = MAX_DEPTH - 2
"""What is left of it inside ScoreBatchRequest > OrderList > Order."""

# Message types (the two Timestamps differ by where they sit) and field kinds.
_ORDER, _CUSTOMER, _PAYMENT, _SHIPPING, _ITEM, _CREATED, _ACCOUNT = range(7)
_UNKNOWN, _STRING, _INT64, _INT32, _BOOL, _MESSAGE = range(6)

# (message, field number, kind, path in Order or sub-message type). A field sent with a wire
# type other than its kind's is unknown, as in upb. Items' fields hold the item being read.
_FIELDS = (
    (_ORDER, 1, _STRING, "order_id"),
    (_ORDER, 2, _STRING, "customer_id"),
    (_ORDER, 3, _MESSAGE, _CREATED),
    (_ORDER, 4, _INT64, "amount_minor"),
    (_ORDER, 5, _STRING, "currency"),
    (_ORDER, 6, _STRING, "channel"),
    (_ORDER, 7, _MESSAGE, _CUSTOMER),
    (_ORDER, 8, _MESSAGE, _PAYMENT),
    (_ORDER, 9, _MESSAGE, _SHIPPING),
    (_ORDER, 10, _STRING, "ip"),
    (_ORDER, 11, _STRING, "ip_country"),
    (_ORDER, 12, _STRING, "device_id"),
    (_ORDER, 13, _MESSAGE, _ITEM),
    (_ORDER, 14, _STRING, "note"),
    (_CUSTOMER, 1, _MESSAGE, _ACCOUNT),
    (_CUSTOMER, 2, _BOOL, "customer.key_account"),
    (_CUSTOMER, 3, _STRING, "customer.email_domain"),
    (_PAYMENT, 1, _STRING, "payment.method"),
    (_PAYMENT, 2, _STRING, "payment.card_bin"),
    (_PAYMENT, 3, _STRING, "payment.card_fingerprint"),
    (_PAYMENT, 4, _STRING, "payment.billing_country"),
    (_SHIPPING, 1, _STRING, "shipping.country"),
    (_SHIPPING, 2, _STRING, "shipping.postal_code"),
    (_SHIPPING, 3, _STRING, "shipping.address_fingerprint"),
    (_ITEM, 1, _STRING, "items.sku"),
    (_ITEM, 2, _STRING, "items.category"),
    (_ITEM, 3, _INT64, "items.quantity"),
    (_ITEM, 4, _INT64, "items.unit_price_minor"),
    (_CREATED, 1, _INT64, "created_at.seconds"),
    (_CREATED, 2, _INT32, "created_at.nanos"),
    (_ACCOUNT, 1, _INT64, "customer.account_created_at.seconds"),
    (_ACCOUNT, 2, _INT32, "customer.account_created_at.nanos"),
)
# Per-message state: a slot per string (start, end, code points) and per integer.
_STRINGS = tuple(str(path) for _, _, kind, path in _FIELDS if kind == _STRING)
_INTS = tuple(str(p) for _, _, k, p in _FIELDS if k in (_INT64, _INT32, _BOOL)) + (
    "has created_at",
    "has customer.account_created_at",
)
_KIND = np.zeros((7, 16), np.int64)  # by message type and field number; 0 is unknown
_ARG = np.zeros((7, 16), np.int64)  # slot, or the sub-message's type
for _msg, _number, _kind, _target in _FIELDS:
    _KIND[_msg, _number] = _kind
    _ARG[_msg, _number] = (
        _target if _kind == _MESSAGE else (_STRINGS if _kind == _STRING else _INTS).index(_target)
    )

# Slots the kernel reads by name (module-level ints are compile-time constants to Numba).
_S_ID, _S_CUSTOMER, _S_CURRENCY, _S_CHANNEL, _S_NOTE, _S_CATEGORY = (
    _STRINGS.index(p)
    for p in ("order_id", "customer_id", "currency", "channel", "note", "items.category")
)
_I_AMOUNT, _I_KEY, _I_QTY, _I_PRICE, _I_CS, _I_CN, _I_AS, _I_AN, _I_HAS_CS, _I_HAS_AS = (
    _INTS.index(p)
    for p in (
        "amount_minor", "customer.key_account", "items.quantity", "items.unit_price_minor",
        "created_at.seconds", "created_at.nanos", "customer.account_created_at.seconds",
        "customer.account_created_at.nanos", "has created_at", "has customer.account_created_at",
    )
)  # fmt: skip


# validate_order's checks, in its order (below them, protobuf would refuse the message).
_V_ORDER_ID, _V_CUSTOMER_ID, _V_CREATED_MISSING, _V_CREATED, _V_ACCOUNT = 20, 21, 22, 23, 24
_V_AMOUNT, _V_CURRENCY, _V_QUANTITY, _V_PRICE = 25, 26, 27, 28

# What encode_orders hashes: the entity columns (salt j + 1, in ENTITY_COLUMNS order), then
# billing, shipping and IP country (salt 0); keys gain the PAIRS columns (salt 100 + p).
# Passed to the kernel as arguments, not read as globals: Numba's cache would not notice a
# change in engine/encode.py. (The FNV constants and _mix64 are compiled in: they fix every
# key in stored velocity state, so they cannot change without a rebuild anyway.)
_ENTITY_PATHS = {
    "customer_id": "customer_id",
    "device_id": "device_id",
    "card_fingerprint": "payment.card_fingerprint",
    "ip": "ip",
    "email_domain": "customer.email_domain",
    "address_fingerprint": "shipping.address_fingerprint",
}
_COUNTRIES = ("payment.billing_country", "shipping.country", "ip_country")
_HASHED = [_ENTITY_PATHS[c] for c in ENTITY_COLUMNS] + list(_COUNTRIES)
_HASH_SLOTS = np.array([_STRINGS.index(p) for p in _HASHED], np.int64)
_HASH_SALTS = np.array([j + 1 for j in range(len(ENTITY_COLUMNS))] + [0, 0, 0], np.uint64)
_PAIR_COLS = np.array([[ENTITY_COLUMNS.index(a), ENTITY_COLUMNS.index(b)] for a, b in PAIRS])
_PAIR_SALTS = np.array([100 + p for p in range(len(PAIRS))], np.uint64)
# Listed currencies as (letters packed into an int, minor_exponent); others get the default.
_CURRENCIES = np.array(
    [[int.from_bytes(c.encode(), "big"), minor_exponent(c)] for c in ZERO_DECIMAL + THREE_DECIMAL]
).reshape(-1, 2)
_DEFAULT_EXPONENT = minor_exponent("")
_RISKY = np.frombuffer("".join(RISKY_CATEGORIES).encode(), np.uint8)
_RISKY_OFFSETS = np.array([0, *accumulate(len(c.encode()) for c in RISKY_CATEGORIES)])


@njit
def _parse(buf, lo, hi, depth, ints, strings, frames, stack, risky, risky_offsets):
    """Read one Order into `ints` and `strings`. Sub-messages are frames (type, end) on
    `frames`: no recursion, and depth is bounded.

    Returns (error, item, a, b, items, total, risky value, units). A wire error has its offset
    in a (bad UTF-8 also the string's slot in b and the item being read in item); else the
    error is the first bad item's (quantity before price) with its index and value, and the
    rest are the item sums encode_orders makes."""
    ints[:] = 0
    strings[:] = 0
    n_items = item_err = item_k = item_value = 0
    total = risky_value = units = 0.0
    d = 0
    frames[0, 0], frames[0, 1] = _ORDER, hi
    pos = lo
    while True:
        end = frames[d, 1]
        if pos >= end:  # the message in frame d ends
            if frames[d, 0] == _ITEM:
                q, p = ints[_I_QTY], ints[_I_PRICE]
                line = float(q) * float(p)
                total += line
                units += q
                c0, c1 = strings[_S_CATEGORY, 0], strings[_S_CATEGORY, 1]
                for r in range(risky_offsets.shape[0] - 1):
                    if _equal(buf, c0, c1, risky, risky_offsets[r], risky_offsets[r + 1]):
                        risky_value += line
                        break
                if item_err == 0 and (q < 0 or p < 0):
                    item_err = _V_QUANTITY if q < 0 else _V_PRICE
                    item_k, item_value = n_items - 1, q if q < 0 else p
            if d == 0:
                return item_err, item_k, item_value, 0, n_items, total, risky_value, units
            d -= 1
            continue
        field, wire_type, after = _tag(buf, pos, end)
        if after < 0:
            return _E_TAG, 0, pos - lo, 0, 0, 0.0, 0.0, 0.0
        kind = _KIND[frames[d, 0], field] if field < 16 else _UNKNOWN
        arg = _ARG[frames[d, 0], field] if field < 16 else 0
        err = 0
        if wire_type == 4:
            err = _E_END_GROUP
        elif wire_type == 2 and kind in (_STRING, _MESSAGE):
            start, stop, err = _delimited(buf, after, end)
            if err == 0 and kind == _STRING:
                chars = _utf8_chars(buf, start, stop)
                if chars < 0:
                    return _E_UTF8, n_items - 1, start - lo, arg, 0, 0.0, 0.0, 0.0
                strings[arg, 0], strings[arg, 1], strings[arg, 2] = start, stop, chars
                after = stop
            elif err == 0 and d == depth:
                err = _E_DEPTH
            elif err == 0:
                d += 1
                frames[d, 0], frames[d, 1] = arg, stop
                after = start
                if arg == _CREATED:
                    ints[_I_HAS_CS] = 1
                elif arg == _ACCOUNT:
                    ints[_I_HAS_AS] = 1
                elif arg == _ITEM:
                    n_items += 1
                    ints[_I_QTY] = ints[_I_PRICE] = 0
                    strings[_S_CATEGORY, 0] = strings[_S_CATEGORY, 1] = 0
        elif wire_type == 0 and kind in (_INT64, _INT32, _BOOL):
            value, after = _varint(buf, after, end)
            if after < 0:
                err = _E_VARINT
            elif kind == _INT64:
                ints[arg] = np.int64(value)
            elif kind == _INT32:
                low = np.int64(value & np.uint64(0xFFFFFFFF))
                ints[arg] = low - (1 << 32) if low >= (1 << 31) else low
            else:
                ints[arg] = 1 if value != 0 else 0
        else:
            after, err = _skip_field(buf, after, end, field, wire_type, depth - d, stack)
        if err:
            return err, 0, pos - lo, 0, 0, 0.0, 0.0, 0.0
        pos = after


@njit_inline
def _check(buf, ints, strings, latest, ts_min, ts_max):
    """validate_order's checks up to the items: (error, a, b), with what Python needs to word
    the error: the timestamp, the amount or the currency's span."""
    if strings[_S_ID, 1] == strings[_S_ID, 0]:
        return _V_ORDER_ID, 0, 0
    if strings[_S_CUSTOMER, 1] == strings[_S_CUSTOMER, 0]:
        return _V_CUSTOMER_ID, 0, 0
    if not ints[_I_HAS_CS]:
        return _V_CREATED_MISSING, 0, 0
    s, ns = ints[_I_CS], ints[_I_CN]
    if not (ts_min <= s <= ts_max and 0 <= ns < 1_000_000_000) or s > latest:
        return _V_CREATED, s, ns
    s, ns = ints[_I_AS], ints[_I_AN]
    if ints[_I_HAS_AS] and not (ts_min <= s <= ts_max and 0 <= ns < 1_000_000_000):
        return _V_ACCOUNT, s, ns
    if ints[_I_AMOUNT] < 0:
        return _V_AMOUNT, ints[_I_AMOUNT], 0
    lo, hi = strings[_S_CURRENCY, 0], strings[_S_CURRENCY, 1]
    if hi - lo != 3 or not (
        65 <= buf[lo] <= 90 and 65 <= buf[lo + 1] <= 90 and 65 <= buf[lo + 2] <= 90
    ):
        return _V_CURRENCY, lo, hi  # not [A-Z]{3}
    return 0, 0, 0


@njit_inline
def _fnv(buf, lo, hi, salt):
    """encode._hash_strings of buf[lo:hi]: 0 for empty, never 0 otherwise."""
    if hi == lo:
        return np.uint64(0)
    h = _FNV_OFFSET ^ salt
    for j in range(lo, hi):
        h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
    h = _mix64(h)
    return h if h != 0 else np.uint64(1)


@njit
def _decode(
    buf, starts, ends, latest, depth, ts_min, ts_max, hash_slots, hash_salts, pair_cols,
    pair_salts, currencies, default_exponent, risky, risky_offsets, f, amount_minor, keys,
    countries, key_account, text, chars, errors,
):  # fmt: skip
    """Decode, check and encode buf[starts[i]:ends[i]] for every i; see `_decode_spans`.

    Returns (messages that failed, bytes written to `text`)."""
    ints = np.zeros(len(_INTS), np.int64)
    strings = np.zeros((len(_STRINGS), 3), np.int64)
    frames = np.zeros((depth + 1, 2), np.int64)
    stack = np.zeros(depth + 1, np.int64)
    n_entities = keys.shape[1] - pair_cols.shape[0]
    n_bad = written = n_chars = 0
    chars[0] = 0
    for i in range(starts.shape[0]):
        lo, hi = starts[i], ends[i]
        if lo < 0 or hi < lo or hi > buf.shape[0]:
            err, item, a, b = _E_SPAN, 0, 0, 0
        else:
            err, item, a, b, n_items, total, risky_value, units = _parse(
                buf, lo, hi, depth, ints, strings, frames, stack, risky, risky_offsets
            )
            if err == 0 or err >= _V_QUANTITY:  # the order's own checks come first
                first, a0, b0 = _check(buf, ints, strings, latest, ts_min, ts_max)
                if first:
                    err, item, a, b = first, 0, a0, b0
        errors[0, i], errors[1, i], errors[2, i], errors[3, i] = err, item, a, b
        if err:  # an empty order's values; no id, no channel
            n_bad += 1
            f[:, i] = 0.0
            f[2, i] = f[5, i] = np.nan
            amount_minor[i] = 0
            keys[i, :] = 0
            countries[:, i] = 0
            key_account[i] = False
            chars[2 * i + 1] = chars[2 * i + 2] = n_chars
            continue
        t = (ints[_I_CS] * 1_000_000 + ints[_I_CN] // 1000) / 1e6
        c = strings[_S_CURRENCY, 0]
        code = (buf[c] << 16) | (buf[c + 1] << 8) | buf[c + 2]
        exponent = default_exponent
        for k in range(currencies.shape[0]):
            if currencies[k, 0] == code:
                exponent = currencies[k, 1]
        f[0, i] = t
        f[1, i] = ints[_I_AMOUNT] / 10.0**exponent
        f[2, i] = np.nan
        if ints[_I_HAS_AS]:
            f[2, i] = (t - (ints[_I_AS] * 1_000_000 + ints[_I_AN] // 1000) / 1e6) / 86400.0
        f[3, i] = n_items
        f[4, i] = units
        f[5, i] = np.nan if n_items == 0 else risky_value / total if total > 0 else 0.0
        f[6, i] = strings[_S_NOTE, 2]
        amount_minor[i] = ints[_I_AMOUNT]
        key_account[i] = ints[_I_KEY] != 0
        for j in range(hash_slots.shape[0]):
            s = hash_slots[j]
            h = _fnv(buf, strings[s, 0], strings[s, 1], hash_salts[j])
            if j < n_entities:
                keys[i, j] = h
            else:
                countries[j - n_entities, i] = h
        for p in range(pair_cols.shape[0]):
            x, y = keys[i, pair_cols[p, 0]], keys[i, pair_cols[p, 1]]
            h = np.uint64(0)
            if x != 0 and y != 0:
                h = _mix64(x ^ _mix64(y ^ pair_salts[p]))
                h = h if h != 0 else np.uint64(1)
            keys[i, n_entities + p] = h
        for k, s in enumerate((_S_ID, _S_CHANNEL)):  # the strings Python builds
            for j in range(strings[s, 0], strings[s, 1]):
                text[written] = buf[j]
                written += 1
            n_chars += strings[s, 2]
            chars[2 * i + 1 + k] = n_chars
    return n_bad, written


@njit
def _split(buf, stack):
    """Walk a ScoreBatchRequest, locating its Orders without parsing them.

    Returns (error, offset, payload kind (0 none, 1 orders, 2 arrow_ipc), Order starts and
    ends, first live Order, arrow_ipc's start and end, arrow_response). Orders before the
    first live one were in an OrderList that a later oneof member replaced."""
    end = buf.shape[0]
    starts = np.empty(16, np.int64)
    ends = np.empty(16, np.int64)
    m = live = kind = arrow_lo = arrow_hi = pos = 0
    respond_arrow = False
    while pos < end:
        field, wire_type, after = _tag(buf, pos, end)
        err = _E_TAG if after < 0 else _E_END_GROUP if wire_type == 4 else 0
        if err == 0 and field == 1 and wire_type == 2:  # orders: an OrderList; lists merge
            lo, hi, err = _delimited(buf, after, end)
            if kind != 1:
                live, kind = m, 1
            q = lo
            while err == 0 and q < hi:
                inner, inner_type, q_after = _tag(buf, q, hi)
                if q_after < 0 or inner_type == 4:
                    err = _E_TAG if q_after < 0 else _E_END_GROUP
                elif inner == 1 and inner_type == 2:
                    o_lo, o_hi, err = _delimited(buf, q_after, hi)
                    if m == starts.shape[0]:
                        starts = np.concatenate((starts, np.empty(m, np.int64)))
                        ends = np.concatenate((ends, np.empty(m, np.int64)))
                    starts[m], ends[m] = o_lo, o_hi
                    m += 1  # on error the spans are dropped anyway
                    q_after = o_hi
                else:
                    q_after, err = _skip_field(
                        buf, q_after, hi, inner, inner_type, MAX_DEPTH - 1, stack
                    )
                if err:
                    pos = q
                else:
                    q = q_after
            after = hi
        elif err == 0 and field == 2 and wire_type == 2:  # arrow_ipc
            arrow_lo, arrow_hi, err = _delimited(buf, after, end)
            kind, live, after = 2, m, arrow_hi
        elif err == 0 and field == 3 and wire_type == 0:  # arrow_response
            value, after = _varint(buf, after, end)
            err = _E_VARINT if after < 0 else 0
            respond_arrow = value != 0
        elif err == 0:
            after, err = _skip_field(buf, after, end, field, wire_type, MAX_DEPTH, stack)
        if err:
            return err, pos, 0, starts[:0], ends[:0], 0, 0, 0, False
        pos = after
    return 0, 0, kind, starts[:m], ends[:m], live, arrow_lo, arrow_hi, respond_arrow
