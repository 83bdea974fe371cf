"""What the HTTP layer (app.py) serves: a backend: the toolkit's own, or an export's.

A backend is anything with these four methods (:class:`Backend`); app.py knows nothing else, so a
second backend (an exported graph run by a standalone runner) plugs in without changing it:

- ``describe() -> dict``: what is loaded (GET /model);
- ``status() -> dict``: ``ready`` and counters (GET /health);
- ``predict(uploads, masks) -> list[dict]``: one item per upload, in order (:func:`result_item`);
  an upload that cannot be read is an item with its ``error``; raises :class:`Busy` when the model's
  queue is full. Called from many threads at once;
- ``close()``.

:class:`ExportBackend` serves an export written by export.py through the runner beside it
(processing/workflow/export_runner.py), with the same decoding and batching.

:class:`ToolkitBackend` loads one finetuned model exactly as predict.py does
(``predict.run.load_finetuned``), decodes uploads exactly as predict.py reads files (uploads.py),
scores them through the model worker (batching.py) with ``detector.score`` + ``detector.decide``,
and turns each image into the same numbers as predict.py's CSV row (``predict.verdict``).
"""

from __future__ import annotations

import base64
import functools
import logging
import math
from typing import Protocol

import cv2
import numpy as np

from autoencoder.errors import UserError
from autoencoder.image_size import ImageSize
from processing.data.images import load_image_and_original
from processing.workflow.predict.verdict import Verdict, verdict_of
from processing.workflow.serve.batching import Batcher, QueueFull
from processing.workflow.serve.config import ServeConfig
from processing.workflow.serve.uploads import DecodedUpload, UploadDecoder

logger = logging.getLogger(__name__)

Upload = tuple[str, bytes]  # (name, the file's bytes)
Busy = QueueFull  # predict() raises it when the model's queue is full (HTTP 503)


class Backend(Protocol):
    def describe(self) -> dict: ...

    def status(self) -> dict: ...

    def predict(self, uploads: list[Upload], masks: bool = False) -> list[dict]: ...

    def close(self) -> None: ...


def finite_or_none(value) -> float | None:
    """A float for JSON: None for NaN and infinities (JSON has no such numbers)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(value):
    """numpy scalars and arrays as Python values, non-finite floats as None, recursively."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return finite_or_none(value)
    return value


def mask_png_base64(mask: np.ndarray) -> str:
    """A bool mask as predict.py writes it with --masks (a 0/255 PNG), base64-encoded."""
    ok, encoded = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("cannot encode the mask as PNG")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def result_item(name: str, decision: dict, verdict: Verdict | None = None, error: str | None = None, masks: bool = False) -> dict:
    """One image of a /predict answer: the numbers of its predictions.csv row (the same values),
    ``bbox`` {x0, y0, x1, y1} inclusive at the original size or None, ``error`` or None, and with
    `masks` the mask as a base64 PNG at the original size (None without one)."""
    item = {
        "name": name,
        "score": None if verdict is None else finite_or_none(verdict.score),
        "defective": None if verdict is None else verdict.defective,
        "threshold": finite_or_none(decision.get("threshold")),
        "min_area": None if decision.get("min_area") is None else int(decision["min_area"]),
        "defect_area_px": None if verdict is None else verdict.defect_area_px,
        "bbox": None if verdict is None or verdict.bbox is None else dict(zip(("x0", "y0", "x1", "y1"), verdict.bbox)),
        "width": None if verdict is None else verdict.width,
        "height": None if verdict is None else verdict.height,
        "error": error,
    }
    if masks:
        item["mask"] = None if verdict is None or verdict.mask is None else mask_png_base64(verdict.mask)
    return item


def score_and_decide(detector, images: np.ndarray) -> list[tuple[float, bool, np.ndarray | None]]:
    """(score, defective, mask at the model's size or None) of each image: one detector.score and
    one detector.decide call for the whole batch (run by the model worker only).

    The detector pads every batch to its batch_size (serve.py --batch), as predict.py's does to its
    -b: the graph has one shape, and the numbers are predict.py's with the same batch size. (Padding
    a short batch to a smaller size would save model time, but oneDNN's convolutions differ by about
    1e-7 between batch sizes, so the scores would no longer equal predict.py's.)"""
    scores = detector.score(images)
    decisions = detector.decide(scores)
    masks = decisions.masks
    return [
        (float(scores.image_scores[index]), bool(decisions.defective[index]), None if masks is None else masks[index])
        for index in range(len(images))
    ]


class ToolkitBackend:
    """One finetuned model of this toolkit, scored in process; see the module docstring."""

    name = "toolkit"

    def __init__(self, model, result_name: str, result_folder, detector, config: ServeConfig):
        self.model, self.result_name, self.result_folder, self.detector = model, result_name, result_folder, detector
        self.color_mode, self.size = model.info.model.color_mode, model.info.model.image_size
        self.decision = jsonable(detector.decision_summary())
        self.config = config
        self.decoder = UploadDecoder(detector.read_input, config.max_pixels, config.workers)
        self.batcher = Batcher(lambda images: score_and_decide(detector, images), config.batch_size,
                               config.max_wait_ms / 1000.0, config.max_queue)

    @classmethod
    def load(cls, config: ServeConfig) -> ToolkitBackend:
        """Load the model and its finetuning result as predict.py does, and score one blank batch
        (the graph is traced before the first request)."""
        from processing.workflow.predict.run import load_finetuned

        model, name, folder, detector = load_finetuned(config.path, config.result, config.results_root, config.batch_size)
        score_and_decide(detector, np.zeros((1, *model.info.model.input_shape), dtype=np.float32))
        return cls(model, name, folder, detector, config)

    def describe(self) -> dict:
        info = self.model.info
        return {
            "backend": self.name,
            "model_folder": str(self.model.folder.resolve()),
            "model_file": self.model.model_file.name,
            "architecture": info.model.architecture,
            "loss": info.training.loss,
            "image_size": self.size.to_json(),
            "color_mode": self.color_mode,
            "result": self.result_name,
            "result_folder": str(self.result_folder.resolve()),
            "decision": self.decision,
            "batching": {"batch": self.config.batch_size, "max_wait_ms": self.config.max_wait_ms, "max_queue": self.config.max_queue},
        }

    def status(self) -> dict:
        return {"ready": self.batcher.alive, "model": self.batcher.stats()}

    def predict(self, uploads: list[Upload], masks: bool = False) -> list[dict]:
        decoded = self.decoder.decode_all(uploads)
        readable = [item for item in decoded if isinstance(item, DecodedUpload)]
        outcomes = iter(self.batcher.submit([item.image for item in readable]))
        items = []
        for (name, _), item in zip(uploads, decoded):
            if isinstance(item, str):
                items.append(result_item(name, self.decision, error=item, masks=masks))
                continue
            score, defective, model_mask = next(outcomes).result()
            verdict = verdict_of(score, defective, model_mask, item.height, item.width)
            items.append(result_item(name, self.decision, verdict, masks=masks))
        return items

    def close(self) -> None:
        self.batcher.close()
        self.decoder.close()


class ExportBackend:
    """An export (export.py: a graph and its export_info.json) scored by its runner; uploads are decoded
    as by the toolkit backend (the runner reads files the same way: tests/test_export.py), batched
    through the graph the same way."""

    name = "export"

    def __init__(self, export, config: ServeConfig):
        self.export, self.config = export, config
        info = export.info
        self.color_mode, self.size = info["input"]["color_mode"], ImageSize.of(export.size)
        self.decision = jsonable(info["decision"])
        self.decoder = UploadDecoder(functools.partial(load_image_and_original, color_mode=self.color_mode, size=self.size),
                                     config.max_pixels, config.workers)
        self.batcher = Batcher(self.score_and_decide, config.batch_size, config.max_wait_ms / 1000.0, config.max_queue)

    @classmethod
    def load(cls, config: ServeConfig) -> ExportBackend:
        from processing.workflow.export_runner import load_export

        try:
            export = load_export(config.path, config.batch_size)
        except ValueError as error:  # the standalone runner (it imports nothing of the toolkit) says what is wrong with the files
            raise UserError(str(error)) from None
        backend = cls(export, config)
        backend.score_and_decide(np.zeros((1, *export.size, export.channels), dtype=np.float32))
        return backend

    def score_and_decide(self, images: np.ndarray) -> list[tuple[float, bool, np.ndarray | None]]:
        outputs = self.export.run(np.ascontiguousarray(images, dtype=np.float32))
        return [self.export.decide(outputs, index) for index in range(len(images))]

    def describe(self) -> dict:
        info = self.export.info
        return {
            "backend": self.name,
            "export": str(self.export.path.resolve()),
            "format": info["format"],
            "model_folder": info["model_folder"],
            "model_file": info["model_file"],
            "image_size": self.size.to_json(),
            "color_mode": self.color_mode,
            "result": info["result"],
            "decision": self.decision,
            "batching": {"batch": self.config.batch_size, "max_wait_ms": self.config.max_wait_ms, "max_queue": self.config.max_queue},
        }

    def status(self) -> dict:
        return {"ready": self.batcher.alive, "model": self.batcher.stats()}

    predict = ToolkitBackend.predict
    close = ToolkitBackend.close


def load_backend(config: ServeConfig) -> Backend:
    """The export at config.path when it is one (export_info.json inside or beside it), else the finetuned model."""
    return (ExportBackend if is_export(config.path) else ToolkitBackend).load(config)


def is_export(path) -> bool:
    from pathlib import Path

    from processing.workflow.export_runner import info_path

    return info_path(Path(path)).is_file()
