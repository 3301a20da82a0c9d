"""Byte units as integers, decimal (KB, MB, GB, TB: powers of 10), binary (KiB, MiB, GiB, TiB: powers of 2).

"GB" always means 10^9 bytes and "GiB" 2^30 bytes; the two are never mixed.
"""

from __future__ import annotations

import re
from fractions import Fraction

from memfit.core.errors import InvalidWorkload

KB = 10**3
MB = 10**6
GB = 10**9
TB = 10**12
KiB = 2**10
MiB = 2**20
GiB = 2**30
TiB = 2**40

UNITS: dict[str, int] = {
    "B": 1, "KB": KB, "MB": MB, "GB": GB, "TB": TB, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
}
"""Every unit memfit reads or prints, by its exact symbol."""

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


def _unit_by_symbol(symbol: str) -> int:
    for name, value in UNITS.items():
        if name.lower() == symbol.lower():
            # "gib" and "GiB" are the same; "gb" is decimal, so case never turns GB into GiB
            return value
    raise InvalidWorkload(f"unknown unit {symbol!r}; use one of {', '.join(UNITS)}")


def parse_size(text: str) -> int:
    """Parse '24GiB', '80 GB', '1.5TiB' or a plain byte count into integer bytes (rounded down).

    Raises:
        InvalidWorkload: the text is not a size.
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidWorkload(f"size {text!r} is not a size; write e.g. 24GiB, 80GB or 1073741824")
    number, symbol = match.groups()
    return int(Fraction(number) * _unit_by_symbol(symbol or "B"))


def format_bytes(num_bytes: int, unit: str = "GiB", *, digits: int = 2) -> str:
    """Format integer bytes in a named unit, e.g. format_bytes(16_060_522_496) == '14.96 GiB'."""
    value = Fraction(num_bytes, _unit_by_symbol(unit))
    symbol = next(name for name in UNITS if name.lower() == unit.lower())
    return f"{float(value):,.{digits}f} {symbol}"
