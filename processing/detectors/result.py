"""A detector's finetuning result, as saved in ``finetuning_result.json``, and its export plan.

Each detector subclasses :class:`FinetuningResult` as a dataclass whose fields (each with its
check, fields.py) are the file's keys; :class:`ExportPlan` is what export.py puts into one graph
for a result. The detector interface itself is base.py.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from autoencoder.errors import UserError
from processing.detectors.fields import read_fields, write_fields

RESULT_FILE = "finetuning_result.json"


@dataclass
class FinetuningResult:
    """What a detector's fit chose, as saved in ``finetuning_result.json``.

    Each detector subclasses this as a dataclass whose fields, in order, are the JSON keys (each
    with its check, fields.py); a field that is None and optional is left out of the file. A
    result written before ``schema_version`` existed reads as version 1.
    """

    SCHEMA_VERSION: ClassVar[int] = 1
    # The keys of summary(): what benchmark.py records of a result.
    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = ("best_score", "best_tpr", "best_tnr", "n_finetune")

    @classmethod
    def from_json(cls, data: dict, source: str = RESULT_FILE) -> FinetuningResult:
        """The result of a JSON object; ValueError (one line naming `source` and the key) when a
        field is missing, of the wrong type or out of range."""
        if isinstance(data, dict):
            version = data.get("schema_version", 1)
            if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= cls.SCHEMA_VERSION:
                raise UserError(f"{source}: schema_version {version!r}: this version of the toolkit reads 1 to {cls.SCHEMA_VERSION}")
        result = cls(**read_fields(cls, data, source))
        result.check(source)
        return result

    def check(self, source: str) -> None:
        """Rules between fields (ValueError naming `source`); each field's own check ran already."""

    def check_files(self, folder: Path) -> None:
        """The files the result needs beside it in `folder` exist (ValueError naming the first missing one)."""

    def to_json(self) -> dict:
        return write_fields(self)

    def summary(self) -> dict:
        """What benchmark.py records of the finetuning (the keys of SUMMARY_KEYS)."""
        data = self.to_json()
        return {key: data[key] for key in self.SUMMARY_KEYS if key in data}

    def matches(self, method: str | None, dtype: str | None) -> bool:
        """Whether test.py -m METHOD -t DTYPE selects this result (None: any)."""
        return (method is None or getattr(self, "method", None) == method) and (dtype is None or getattr(self, "dtype", None) == dtype)

    @property
    def balanced_accuracy(self) -> float | None:
        """The finetuning subset's balanced accuracy of the chosen decision."""
        return getattr(self, "best_score", None)

    def expectation_line(self) -> str | None:
        """What the decision is expected to do on new images, as one line (None: the result does not say)."""
        expected = getattr(self, "expected", None)
        if not expected:
            return None
        line = expected_line(expected)
        return f"{line} (finetuning data, {expected.get('resamples')} resamples)"

    @property
    def decision_warnings(self) -> list[str]:
        """The one-line warnings finetune.py gave about the chosen decision."""
        return list(getattr(self, "warnings", None) or [])


def two_digits(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def expected_line(expected: dict) -> str:
    """``expected TPR 0.93 (0.81-1.00), TNR 0.95 (0.88-1.00)`` of a result's ``expected`` record."""
    def rate(key):
        value, (low, high) = expected.get(key), expected.get(f"{key}_interval") or (None, None)
        if value is None:
            return "n/a"
        return f"{value:.2f}" + ("" if low is None or high is None else f" ({low:.2f}-{high:.2f})")

    return f"expected TPR {rate('tpr')}, TNR {rate('tnr')}"


def read_result_file(path: Path) -> dict:
    """The JSON object of a finetuning_result.json; one line naming the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}): rerun finetune.py with --overwrite") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a result written by finetune.py (not a JSON object); rerun finetune.py with --overwrite")
    return data


class ExportPlan(abc.ABC):
    """What export.py puts into one graph for a finetuning result (a detector's ``export_plan()``).

    The graph takes ``images``: float32 (N, H, W, C) in [0, 1], the model input exactly as the
    toolkit makes it from a file (decoded, scaled, resized, colour converted: the runner beside
    every export does that, processing/workflow/export_runner.py). ``outputs`` builds the graph's
    outputs from it with keras.ops (traced once by export.py, in the compute dtype); ``decision``
    is what the runner needs to finish the decision outside the graph, and what export_info.json
    records.
    """

    models: list  # the Keras models the graph calls (their weights become the graph's constants)

    @abc.abstractmethod
    def outputs(self, images, dtype: str) -> dict:
        """{output name: tensor} of a batch of model inputs; `dtype` the compute dtype (float64 or float32)."""

    @abc.abstractmethod
    def decision(self) -> dict:
        """The decision settings (JSON): ``"rule"`` names what the runner applies to the outputs."""

    @abc.abstractmethod
    def describe_outputs(self, size: tuple[int, int]) -> dict[str, str]:
        """{output name: what it is} for inputs of `size` (height, width), for export_info.json."""

    def large_arrays(self) -> dict:
        """{name: array} of constants too large for the converters of one-file formats, which export.py
        feeds in while converting and stores as the graph's weights afterwards (none by default)."""
        return {}

    def bind(self, tensors: dict) -> None:  # noqa: B027  (a hook: plans without large arrays need nothing)
        """Use `tensors` (named as :meth:`large_arrays`) in place of those arrays when :meth:`outputs` is traced next."""

    def check_format(self, fmt: str, dtype: str) -> None:  # noqa: B027  (a hook: most plans suit every format)
        """ValueError (one line) when a format computing in `dtype` cannot reproduce this result."""
