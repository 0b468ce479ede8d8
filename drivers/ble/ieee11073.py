"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers, as used by the Bluetooth SIG health profiles.

Both are ``mantissa * 10 ** exponent`` with two's-complement fields: SFLOAT has a 4-bit exponent and a
12-bit mantissa, FLOAT an 8-bit exponent and a 24-bit mantissa. Five raw values are special; a special
value means "no number here" and decodes to ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Special(StrEnum):
    NAN = "NaN"
    NRES = "NRes"
    """Not at this resolution."""
    POSITIVE_INFINITY = "+INF"
    NEGATIVE_INFINITY = "-INF"
    RESERVED = "reserved"


SFLOAT_SPECIALS: Final[Mapping[int, Special]] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POSITIVE_INFINITY,
    0x0802: Special.NEGATIVE_INFINITY,
    0x0801: Special.RESERVED,
}
FLOAT_SPECIALS: Final[Mapping[int, Special]] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POSITIVE_INFINITY,
    0x00800002: Special.NEGATIVE_INFINITY,
    0x00800001: Special.RESERVED,
}


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _scale(mantissa: int, exponent: int) -> float:
    # Dividing by a power of ten keeps decimal values exact where a float can hold them (37.6, not
    # 37.600000000000001), which multiplying by 10 ** -n would not.
    if exponent < 0:
        return mantissa / float(10 ** (-exponent))
    return float(mantissa * 10**exponent)


def sfloat_special(raw: int) -> Special | None:
    return SFLOAT_SPECIALS.get(raw & 0xFFFF)


def float_special(raw: int) -> Special | None:
    return FLOAT_SPECIALS.get(raw & 0xFFFFFFFF)


def decode_sfloat(raw: int) -> float | None:
    """The value of a 16-bit SFLOAT (as an unsigned int), or None for a special value."""
    raw &= 0xFFFF
    if raw in SFLOAT_SPECIALS:
        return None
    return _scale(_signed(raw & 0x0FFF, 12), _signed(raw >> 12, 4))


def decode_float(raw: int) -> float | None:
    """The value of a 32-bit FLOAT (as an unsigned int), or None for a special value."""
    raw &= 0xFFFFFFFF
    if raw in FLOAT_SPECIALS:
        return None
    return _scale(_signed(raw & 0x00FFFFFF, 24), _signed(raw >> 24, 8))
