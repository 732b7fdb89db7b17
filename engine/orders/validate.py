"""The validator kernel: every order of every entry point is checked here, against the rule
table of `engine.orders.rules` (which words what this kernel reports).

`check_order` finds the first rule order i breaks, in the schema's slot order (strings, then
times, the amount and the items), and writes (rule, field, item, a, b): the rule code, the
index of the field in `rules.ERROR_FIELDS`, the item's index within the order (-1 for none),
and two numbers that word the refusal (a length, a value, a timestamp's seconds and nanos).
Lengths are checked before UTF-8, so a huge value is refused without being scanned.
The rule codes are defined here, beside the code that reports them, so that Numba's cache
(which watches this file) can never pair a compiled kernel with other codes.
"""

from __future__ import annotations

from engine.jit import njit, njit_inline

REQUIRED, UTF8, TOO_LONG, CURRENCY_CODE, COUNTRY_CODE = 20, 21, 22, 23, 24
TIMESTAMP, TOO_EARLY, FUTURE, NEGATIVE, TOO_LARGE, TOO_MANY, LINE_TOTAL = range(25, 32)
RULE_CODES = range(REQUIRED, LINE_TOTAL + 1)
FREE_TEXT, CURRENCY_FORMAT, COUNTRY_FORMAT = 0, 1, 2
TIMESTAMP_MAX_S = 253_402_300_799
"""google.protobuf.Timestamp's own upper limit (9999-12-31): later is not a time, whatever
the clock bound (histories have none), and would overflow microseconds in int64."""
# Rows of RuleArrays.strings, and the entries of RuleArrays.scalars.
MAX_BYTES, IS_REQUIRED, FORMAT = 0, 1, 2
SC_EARLIEST, SC_MAX_AMOUNT, SC_MAX_QUANTITY, SC_MAX_ITEMS = 0, 1, 2, 3
# ... and where each kind of field starts in engine.orders.rules.ERROR_FIELDS:
SC_F_TIME, SC_F_AMOUNT, SC_F_ITEMS, SC_F_ITEM_STRING, SC_F_QUANTITY, SC_F_PRICE = range(4, 10)
N_SCALARS = 10


@njit_inline
def utf8_chars(buf, lo, hi):
    """Code points in buf[lo:hi] (Python's len), or -1 unless strict UTF-8: overlong forms,
    surrogates and code points past U+10FFFF are refused, as protobuf and Python refuse them."""
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
def _upper(buf, lo, hi):
    """Packed base-26 value of an A-Z code, -1 if any byte is not A-Z."""
    v = 0
    for j in range(lo, hi):
        c = buf[j]
        if c < 65 or c > 90:
            return -1
        v = v * 26 + (c - 65)
    return v


@njit_inline
def _text(buf, lo, hi, required, max_bytes):
    """The rule a free-text value breaks (0 for none)."""
    size = hi - lo
    if size == 0:
        return REQUIRED if required else 0
    if size > max_bytes:
        return TOO_LONG
    if utf8_chars(buf, lo, hi) < 0:
        return UTF8
    return 0


@njit
def check_orders(cols, rules, latest, errors):
    """The first rule each order breaks, into errors (n, 5) (zeros for a valid order);
    returns how many orders failed.

    Field by field, in the schema's order, over all orders (a field's values lie side by
    side), skipping orders that already failed: the first failure of each order in field
    order, as a row-by-row check finds it, with uniform inner loops. Every array is read out
    of its NamedTuple once: reading a NamedTuple's field costs reference counting each time."""
    malformed = cols.malformed
    buf, spans, times, amounts = cols.buf, cols.spans, cols.times, cols.amount_minor
    item_rows, item_spans, item_ints = cols.item_rows, cols.item_spans, cols.item_ints
    strings, item_strings, time_required = rules.strings, rules.item_strings, rules.times
    currencies, countries, sc = rules.currencies, rules.countries, rules.scalars
    earliest, max_amount, max_quantity = sc[SC_EARLIEST], sc[SC_MAX_AMOUNT], sc[SC_MAX_QUANTITY]
    max_items = sc[SC_MAX_ITEMS]
    n = amounts.shape[0]
    n_bad = 0
    for i in range(n):
        errors[i, :] = 0
        if malformed[i, 0] != 0:
            errors[i, 0], errors[i, 1], errors[i, 2], errors[i, 3] = (
                malformed[i, 0], -1, -1, malformed[i, 1],
            )  # fmt: skip
            n_bad += 1
    for s in range(spans.shape[0]):
        required, max_bytes, fmt = (
            strings[IS_REQUIRED, s],
            strings[MAX_BYTES, s],
            strings[FORMAT, s],
        )
        width = 3 if fmt == CURRENCY_FORMAT else 2
        starts, ends = spans[s, 0], spans[s, 1]
        for i in range(n):
            if errors[i, 0]:
                continue
            lo, hi = starts[i], ends[i]
            rule = _text(buf, lo, hi, required, max_bytes)
            if rule == 0 and hi > lo and fmt != FREE_TEXT:
                code = _upper(buf, lo, hi) if hi - lo == width else -1
                if fmt == CURRENCY_FORMAT and (code < 0 or currencies[code] < 0):
                    rule = CURRENCY_CODE
                elif fmt == COUNTRY_FORMAT and (code < 0 or not countries[code]):
                    rule = COUNTRY_CODE
            if rule:
                errors[i, 0], errors[i, 1], errors[i, 2], errors[i, 3] = rule, s, -1, hi - lo
                n_bad += 1
    for k in range(times.shape[0]):
        field, required = sc[SC_F_TIME] + k, time_required[k]
        for i in range(n):
            if errors[i, 0]:
                continue
            sec, ns, present = times[k, 0, i], times[k, 1, i], times[k, 2, i]
            rule = 0
            if not present:
                rule = REQUIRED if required else 0
            elif ns < 0 or ns >= 1_000_000_000 or sec > TIMESTAMP_MAX_S:
                rule = TIMESTAMP
            elif sec < earliest:
                rule = TOO_EARLY
            elif sec > latest:
                rule = FUTURE
            if rule:
                errors[i, 0], errors[i, 1], errors[i, 2] = rule, field, -1
                errors[i, 3], errors[i, 4] = sec, ns
                n_bad += 1
    f_amount, f_items, f_item_string = sc[SC_F_AMOUNT], sc[SC_F_ITEMS], sc[SC_F_ITEM_STRING]
    f_quantity, f_price = sc[SC_F_QUANTITY], sc[SC_F_PRICE]
    for i in range(n):
        if errors[i, 0]:
            continue
        amount = amounts[i]
        rule = NEGATIVE if amount < 0 else TOO_LARGE if amount > max_amount else 0
        field, item, a, b = f_amount, -1, amount, 0
        lo, hi = item_rows[i], item_rows[i + 1]
        if rule == 0 and hi - lo > max_items:
            rule, field, a = TOO_MANY, f_items, hi - lo
        j = lo
        while rule == 0 and j < hi:
            item = j - lo
            for s in range(item_spans.shape[0]):
                s_lo, s_hi = item_spans[s, 0, j], item_spans[s, 1, j]
                rule = _text(buf, s_lo, s_hi, False, item_strings[s])
                if rule:
                    field, a = f_item_string + s, s_hi - s_lo
                    break
            if rule == 0:
                q, p = item_ints[0, j], item_ints[1, j]
                if q < 0 or q > max_quantity:
                    rule, field, a = (NEGATIVE if q < 0 else TOO_LARGE), f_quantity, q
                elif p < 0 or p > max_amount:
                    rule, field, a = (NEGATIVE if p < 0 else TOO_LARGE), f_price, p
                elif p > 0 and q > max_amount // p:
                    rule, field, a, b = LINE_TOTAL, f_items, q, p
            j += 1
        if rule:
            errors[i, 0], errors[i, 1], errors[i, 2], errors[i, 3], errors[i, 4] = (
                rule, field, item, a, b,
            )  # fmt: skip
            n_bad += 1
    return n_bad
