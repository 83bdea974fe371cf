"""Checks of single settings, shared by every config's ``validate()``: one line naming the flag."""

from __future__ import annotations

import math

from autoencoder.errors import UserError


def check_positive_int(value, flag: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{flag} {value}: expected {what} (a positive integer)")
    return value


def check_non_negative_int(value, flag: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{flag} {value}: expected {what} >= 0")
    return value


def check_positive_number(value, flag: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise UserError(f"{flag} {value}: expected a positive {what}")
    return float(value)


def check_fraction(value, flag: str, why: str = "") -> float:
    """`value` in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        raise UserError(f"{flag} {shown}: expected a fraction in (0, 1){why}")
    return float(value)


def check_choice(value, options, flag: str) -> str:
    if value not in options:
        raise UserError(f"{flag} {value!r}: expected one of {', '.join(options)}")
    return value
