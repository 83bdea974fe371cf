"""The verdict on one scored image at its original size: score, defective, the mask, its area and
bounding box.

predict.py writes it as a row of predictions.csv (:func:`csv_fields`) and serve.py answers it as
JSON: both make it here, from the detector's ``Scores`` and ``Decisions``, so their numbers cannot
drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from processing.evaluation.overlays import mask_at_original_size


@dataclass(frozen=True)
class Verdict:
    score: float  # the image score (higher = more anomalous)
    defective: bool  # the finetuned decision
    height: int  # the image's original size
    width: int
    mask: np.ndarray | None = None  # bool (height, width): the predicted defect; None when the detector makes no masks
    defect_area_px: int | None = None  # pixels of `mask`; None without masks
    bbox: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) of `mask`, inclusive; None without a defect pixel


def verdict_of(score, defective, model_mask: np.ndarray | None, height: int, width: int) -> Verdict:
    """The verdict of one image from its score, its decision and its mask at the model's size."""
    score, defective, height, width = float(score), bool(defective), int(height), int(width)
    if model_mask is None:
        return Verdict(score, defective, height, width)
    mask = mask_at_original_size(model_mask, height, width)
    area = int(np.count_nonzero(mask))
    bbox = None
    if area:
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        bbox = (x, y, x + w - 1, y + h - 1)
    return Verdict(score, defective, height, width, mask, area, bbox)


def verdicts_of(scores, decisions, sizes: list[tuple[int, int]]) -> list[Verdict]:
    """The verdicts of a batch: a detector's ``Scores`` and ``Decisions`` of N images and their
    original (height, width)."""
    masks = decisions.masks
    return [
        verdict_of(scores.image_scores[index], decisions.defective[index], None if masks is None else masks[index], height, width)
        for index, (height, width) in enumerate(sizes)
    ]


def csv_fields(verdict: Verdict) -> dict:
    """The verdict's columns of predictions.csv (the ones it leaves empty are not set)."""
    fields = {"score": repr(verdict.score), "defective": int(verdict.defective), "width": verdict.width, "height": verdict.height}
    if verdict.defect_area_px is not None:
        fields["defect_area_px"] = verdict.defect_area_px
    if verdict.bbox is not None:
        fields.update(zip(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"), verdict.bbox))
    return fields
