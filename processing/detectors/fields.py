"""Typed fields of a finetuning result, checked in one place when a result is read.

A finetuning result is a dataclass (``FinetuningResult`` in base.py); each field names its check
here with :func:`checked`. Reading ``finetuning_result.json`` runs every check, so a hand-edited
file with ``min_area: 2.5``, ``threshold: Infinity``, ``NaN`` or ``clear_border: "false"`` is
refused with one line naming the file, the key and what was expected, never applied.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], Any]  # value -> value (possibly converted); raises FieldError


class FieldError(ValueError):
    """A value that does not fit its field; the message says what was expected."""


def checked(check: Check, *, default=dataclasses.MISSING, optional: bool = False, **kwargs):
    """A dataclass field whose JSON value is checked by `check`; `optional`: absent (None) is written as no key."""
    metadata = {"check": check, "optional": optional}
    if optional and default is dataclasses.MISSING and "default_factory" not in kwargs:
        default = None
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text(value):
    if not isinstance(value, str):
        raise FieldError("expected a string")
    return value


def boolean(value):
    if not isinstance(value, bool):
        raise FieldError("expected true or false")
    return value


def integer(minimum: int | None = None) -> Check:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError("expected a whole number" + (f" >= {minimum}" if minimum is not None else ""))
        if minimum is not None and value < minimum:
            raise FieldError(f"expected a whole number >= {minimum}")
        return value

    return check


def number(minimum: float | None = None, maximum: float | None = None, positive: bool = False) -> Check:
    """A finite number (JSON has no infinity; Python's json reads Infinity and NaN, which are refused)."""
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    if positive:
        bounds.append("> 0")
    expected = "expected a finite number" + (f" {' and '.join(bounds)}" if bounds else "")

    def check(value):
        if not _is_number(value) or not math.isfinite(value):
            raise FieldError(expected)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum) or (positive and not value > 0):
            raise FieldError(expected)
        return float(value)

    return check


def metric(value):
    """A rate in [0, 1], or null where it could not be computed."""
    if value is None:
        return None
    return number(0.0, 1.0)(value)


def sha256(value):
    """A SHA-256 in hex (64 lower-case hex digits)."""
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise FieldError("expected a SHA-256 (64 hex digits)")
    return value


def choice(*options: str) -> Check:
    def check(value):
        if value not in options:
            raise FieldError(f"expected one of {', '.join(options)}")
        return value

    return check


def list_of(item: Check) -> Check:
    def check(value):
        if not isinstance(value, list):
            raise FieldError("expected a list")
        return [item(element) for element in value]

    return check


def mapping(value):
    if not isinstance(value, dict):
        raise FieldError("expected an object")
    return value


def operating_point(value):
    """An operating point as finetune.py records it: {"kind": balanced|false_alarms|detection, "rate": fraction}."""
    from processing.decision.operating_point import OperatingPoint

    try:
        OperatingPoint.from_json(value)
    except ValueError as error:
        raise FieldError(f"expected {{\"kind\": ..., \"rate\": ...}} ({error})") from None
    return value


def expected_rates(value):
    """finetune.py's expected rates: tpr, tnr (and balanced_accuracy) fractions or null, their
    intervals [low, high] of fractions, a count of resamples."""
    table = mapping(value)
    for key in ("tpr", "tnr", "balanced_accuracy"):
        rate = table.get(key)
        if rate is not None and not (_is_number(rate) and 0.0 <= rate <= 1.0):
            raise FieldError(f"{key}: expected a fraction in [0, 1] or null")
        interval = table.get(f"{key}_interval")
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2
                                         and all(v is None or (_is_number(v) and 0.0 <= v <= 1.0) for v in interval)):
            raise FieldError(f"{key}_interval: expected [low, high] fractions")
    resamples = table.get("resamples")
    if resamples is not None and (isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0):
        raise FieldError("resamples: expected a whole number >= 0")
    return table


def number_range(value):
    """[low, high] with low < high, both finite."""
    values = list_of(number())(value)
    if len(values) != 2 or not values[0] < values[1]:
        raise FieldError("expected [low, high] with low < high")
    return values


def nullable(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def read_fields(cls, data: dict, source: str) -> dict:
    """The checked keyword arguments of dataclass `cls` from the JSON object `data`.

    Unknown keys are ignored (a newer version may add some); a missing required key, or a value
    that fails its check, raises ValueError naming `source` (the file) and the key.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: not a finetuning result (expected a JSON object); rerun finetune.py with --overwrite")
    values = {}
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        if spec.name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ValueError(f"{source}: no {spec.name!r}; not a result written by finetune.py (rerun it with --overwrite)")
            continue
        value = data[spec.name]
        if value is None and spec.metadata.get("optional"):
            continue
        check = spec.metadata.get("check")
        try:
            values[spec.name] = check(value) if check is not None else value
        except FieldError as error:
            raise ValueError(f"{source}: {spec.name} {_shown(value)}: {error}") from None
    return values


def write_fields(result) -> dict:
    """The JSON object of a dataclass result: its fields in order, optional ones only when set."""
    out = {}
    for spec in dataclasses.fields(result):
        value = getattr(result, spec.name)
        if value is None and spec.metadata.get("optional"):
            continue
        out[spec.name] = value
    return out


def _shown(value) -> str:
    shown = repr(value) if isinstance(value, str) else str(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
