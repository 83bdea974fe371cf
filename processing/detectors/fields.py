"""The checks of a finetuning result's fields that know about decisions; the mechanism itself, and
the checks every record shares, are autoencoder/fields.py's (info.json is read with the same).

A finetuning result is a dataclass (``FinetuningResult`` in base.py); each field names its check
with :func:`checked`. Reading ``finetuning_result.json`` runs every check, so a hand-edited file
with ``min_area: 2.5``, ``threshold: Infinity``, ``NaN`` or ``clear_border: "false"`` is refused
with one line naming the file, the key and what was expected, never applied.
"""

from __future__ import annotations

from autoencoder.fields import (  # noqa: F401  (the checks results name, as f.<check>)
    FieldError,
    boolean,
    checked,
    choice,
    integer,
    is_number,
    list_of,
    mapping,
    metric,
    nullable,
    number,
    number_range,
    read_fields,
    sha256,
    text,
    write_fields,
)


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
        if rate is not None and not (is_number(rate) and 0.0 <= rate <= 1.0):
            raise FieldError(f"{key}: expected a fraction in [0, 1] or null")
        interval = table.get(f"{key}_interval")
        if interval is not None and not (isinstance(interval, list) and len(interval) == 2
                                         and all(v is None or (is_number(v) and 0.0 <= v <= 1.0) for v in interval)):
            raise FieldError(f"{key}_interval: expected [low, high] fractions")
    resamples = table.get("resamples")
    if resamples is not None and (isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0):
        raise FieldError("resamples: expected a whole number >= 0")
    return table
