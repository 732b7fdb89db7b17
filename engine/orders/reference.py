"""Reference data the order rules check against: ISO 4217 currencies and ISO 3166-1 countries.

The code lists come from the `iso4217` and `iso3166` packages (kept current by their
maintainers, no network at run time), not from a table typed in here. A currency is known
when ISO 4217 gives it a minor unit: that excludes the codes that are not money a checkout
takes (XXX "no currency", XTS "testing", precious metals, bond-market units, XDR).

The kernels look codes up by their letters packed into an integer (`pack`), in dense tables:
26**3 entries for currencies (the minor unit's exponent, -1 unknown) and 26**2 for countries.
"""

from __future__ import annotations

from collections.abc import Iterable

import iso3166
import iso4217
import numpy as np

_A = ord("A")


def pack(code: str) -> int:
    """Index of an upper-case A-Z code in the dense tables (base 26)."""
    v = 0
    for ch in code:
        v = v * 26 + (ord(ch) - _A)
    return v


def currency_exponents() -> dict[str, int]:
    """Known currencies and the decimal places of their minor unit."""
    return {c.code: int(c.exponent) for c in iso4217.Currency if c.exponent is not None}


def country_codes() -> frozenset[str]:
    return frozenset(iso3166.countries_by_alpha2)


def currency_table(extra: Iterable[str] = ()) -> np.ndarray:
    """int8 (26**3,): exponent per packed code, -1 for a code the engine does not take.
    `extra` adds codes (as `CODE` with exponent 2, or `CODE:N`)."""
    table = np.full(26**3, -1, np.int8)
    known = currency_exponents()
    for item in extra:
        code, _, digits = item.partition(":")
        known[code] = int(digits) if digits else 2
    for code, exp in known.items():
        if len(code) == 3 and code.isascii() and code.isupper():
            table[pack(code)] = exp
    return table


def country_table(extra: Iterable[str] = ()) -> np.ndarray:
    """bool (26**2,): whether a packed alpha-2 code is a country the rules accept."""
    table = np.zeros(26**2, np.bool_)
    for code in country_codes() | frozenset(extra):
        if len(code) == 2 and code.isascii() and code.isupper():
            table[pack(code)] = True
    return table
