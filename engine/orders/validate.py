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
FREE_TEXT, CURRENCY_FORMAT, COUNTRY_FORMAT = 0, 1, 2
# Rows of RuleArrays.strings, and the entries of RuleArrays.scalars.
MAX_BYTES, IS_REQUIRED, FORMAT = 0, 1, 2
EARLIEST, MAX_AMOUNT, MAX_QUANTITY, MAX_ITEMS = 0, 1, 2, 3
F_TIME, F_AMOUNT, F_ITEMS, F_ITEM_STRING, F_QUANTITY, F_PRICE = 4, 5, 6, 7, 8, 9
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
def _string(buf, lo, hi, required, max_bytes, fmt, currencies, countries):
    """(rule, length) for one string value."""
    size = hi - lo
    if size == 0:
        return (REQUIRED if required else 0), 0
    if size > max_bytes:
        return TOO_LONG, size
    if utf8_chars(buf, lo, hi) < 0:
        return UTF8, size
    if fmt == CURRENCY_FORMAT:
        code = _upper(buf, lo, hi) if size == 3 else -1
        if code < 0 or currencies[code] < 0:
            return CURRENCY_CODE, size
    elif fmt == COUNTRY_FORMAT:
        code = _upper(buf, lo, hi) if size == 2 else -1
        if code < 0 or not countries[code]:
            return COUNTRY_CODE, size
    return 0, size


@njit_inline
def _fail(err, rule, field, item, a, b):
    err[0], err[1], err[2], err[3], err[4] = rule, field, item, a, b
    return rule


@njit
def check_order(cols, rules, latest, i, err):
    """The first rule order i breaks (0 if none), with its details in `err` (int64, 5)."""
    sc = rules.scalars
    if cols.malformed[i, 0] != 0:
        return _fail(err, cols.malformed[i, 0], -1, -1, cols.malformed[i, 1], 0)
    buf = cols.buf
    for s in range(cols.spans.shape[1]):
        rule, size = _string(
            buf, cols.spans[i, s, 0], cols.spans[i, s, 1], rules.strings[IS_REQUIRED, s],
            rules.strings[MAX_BYTES, s], rules.strings[FORMAT, s], rules.currencies,
            rules.countries,
        )  # fmt: skip
        if rule:
            return _fail(err, rule, s, -1, size, 0)
    for k in range(cols.times.shape[1]):
        sec, ns, present = cols.times[i, k, 0], cols.times[i, k, 1], cols.times[i, k, 2]
        field = sc[F_TIME] + k
        if not present:
            if rules.times[k]:
                return _fail(err, REQUIRED, field, -1, 0, 0)
            continue
        if ns < 0 or ns >= 1_000_000_000:
            return _fail(err, TIMESTAMP, field, -1, sec, ns)
        if sec < sc[EARLIEST]:
            return _fail(err, TOO_EARLY, field, -1, sec, ns)
        if sec > latest:
            return _fail(err, FUTURE, field, -1, sec, ns)
    amount = cols.amount_minor[i]
    if amount < 0:
        return _fail(err, NEGATIVE, sc[F_AMOUNT], -1, amount, 0)
    if amount > sc[MAX_AMOUNT]:
        return _fail(err, TOO_LARGE, sc[F_AMOUNT], -1, amount, 0)
    lo, hi = cols.item_rows[i], cols.item_rows[i + 1]
    if hi - lo > sc[MAX_ITEMS]:
        return _fail(err, TOO_MANY, sc[F_ITEMS], -1, hi - lo, 0)
    for j in range(lo, hi):
        for s in range(cols.item_spans.shape[1]):
            rule, size = _string(
                buf, cols.item_spans[j, s, 0], cols.item_spans[j, s, 1], False,
                rules.item_strings[s], FREE_TEXT, rules.currencies, rules.countries,
            )  # fmt: skip
            if rule:
                return _fail(err, rule, sc[F_ITEM_STRING] + s, j - lo, size, 0)
        q, p = cols.item_ints[j, 0], cols.item_ints[j, 1]
        if q < 0:
            return _fail(err, NEGATIVE, sc[F_QUANTITY], j - lo, q, 0)
        if q > sc[MAX_QUANTITY]:
            return _fail(err, TOO_LARGE, sc[F_QUANTITY], j - lo, q, 0)
        if p < 0:
            return _fail(err, NEGATIVE, sc[F_PRICE], j - lo, p, 0)
        if p > sc[MAX_AMOUNT]:
            return _fail(err, TOO_LARGE, sc[F_PRICE], j - lo, p, 0)
        if p > 0 and q > sc[MAX_AMOUNT] // p:
            return _fail(err, LINE_TOTAL, sc[F_ITEMS], j - lo, q, p)
    return 0


@njit
def check_orders(cols, rules, latest, errors):
    """`check_order` for every row into errors (n, 5); returns how many rows failed."""
    n_bad = 0
    for i in range(cols.amount_minor.shape[0]):
        if check_order(cols, rules, latest, i, errors[i]):
            n_bad += 1
        else:
            errors[i, :] = 0
    return n_bad
