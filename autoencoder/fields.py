"""Typed fields of the toolkit's JSON records, checked in one place when a record is read.

A record (a model folder's info.json: autoencoder/model_info.py; a finetuning result:
processing/detectors/) is a dataclass; each field names its check here with :func:`checked`, and
a field whose value is an object of its own is a nested dataclass (:func:`nested`). Reading a
record runs every check, so a hand-edited file with ``min_area: 2.5``, ``threshold: Infinity``,
``NaN``, ``clear_border: "false"`` or ``image_size: "64"`` is refused with one line naming the
file, the key and what was expected, never applied.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from autoencoder.errors import UserError

Check = Callable[[Any], Any]  # value -> value (possibly converted); raises FieldError


class FieldError(UserError):
    """A value that does not fit its field; the message says what was expected. `key` is the
    dotted key of a nested field ("" for the field itself: the reader names it)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


def checked(check: Check, *, default=dataclasses.MISSING, optional: bool = False, **kwargs):
    """A dataclass field whose JSON value is checked by `check`; `optional`: absent (None) is written as no key."""
    metadata = {"check": check, "optional": optional}
    if optional and default is dataclasses.MISSING and "default_factory" not in kwargs:
        default = None
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def is_number(value) -> bool:
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
        if not is_number(value) or not math.isfinite(value):
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


def number_range(value):
    """[low, high] with low < high, both finite."""
    values = list_of(number())(value)
    if len(values) != 2 or not values[0] < values[1]:
        raise FieldError("expected [low, high] with low < high")
    return values


def nullable(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


class MissingField(FieldError):
    """A required key that is not there (``key`` names it)."""


def parse_fields(cls, data) -> dict:
    """The checked keyword arguments of dataclass `cls` from the JSON object `data`.

    Unknown keys are ignored (a newer version may add some); a missing required key raises
    MissingField, a value that fails its check FieldError, each with the dotted ``key``.
    """
    if not isinstance(data, dict):
        raise FieldError("expected an object")
    values = {}
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        if spec.name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise MissingField("missing", spec.name)
            continue
        value = data[spec.name]
        if value is None and spec.metadata.get("optional"):
            continue
        check = spec.metadata.get("check")
        try:
            values[spec.name] = check(value) if check is not None else value
        except FieldError as error:
            raise type(error)(str(error), f"{spec.name}.{error.key}" if error.key else spec.name) from None
    return values


def nested(cls) -> Check:
    """The check of a field holding an object: the dataclass `cls` read from it (every field checked)."""
    return lambda value: cls(**parse_fields(cls, value))


def read_fields(cls, data: dict, source: str) -> dict:
    """:func:`parse_fields` of a finetuning result; ValueError naming `source` (the file) and the key."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: not a finetuning result (expected a JSON object); rerun finetune.py with --overwrite")
    try:
        return parse_fields(cls, data)
    except MissingField as error:
        raise UserError(f"{source}: no {error.key!r}; not a result written by finetune.py (rerun it with --overwrite)") from None
    except FieldError as error:
        raise UserError(f"{source}: {error.key} {_shown(value_at(data, error.key))}: {error}") from None


def value_at(data, dotted: str):
    """The value at a dotted key of nested JSON objects."""
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


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
