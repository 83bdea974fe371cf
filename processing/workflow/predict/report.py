"""predict.py's report.html: counts, the score histogram with the threshold, the most suspicious
images first (built from predictions.csv at the end of a run; processing/evaluation/report.py
writes the page)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from processing.data.tiles import batch_of
from processing.evaluation.overlays import draw_overlay, mask_at_original_size, write_png
from processing.evaluation.report import GalleryItem, ReportData, relative_link, score_histogram, url_of, write_report
from processing.workflow.predict.csv_io import read_predictions
from processing.workflow.predict.loading import iter_loaded
from processing.workflow.predict.settings import PREDICTIONS_FILE, REPORT_DIR, REPORT_FILE, SETTINGS_FILE, output_stem, row_file

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256  # longest side of a gallery picture, in pixels


def gallery_thumbnails(rows: list[dict], detector, folder: Path, workers: int | None, cwd: str | None = None) -> list[str | None]:
    """Overlays of the gallery's images, at most THUMBNAIL_SIZE pixels a side, scored again (a few
    dozen images): the report needs no overlay written during the run. None where the image cannot
    be read any more."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [row_file(row["path"], cwd) for row in rows]
    names: list[str | None] = [None] * len(rows)
    offset = 0
    for chunk, loaded in iter_loaded(paths, detector.read_input, detector.batch_size, workers):
        good = [index for index, item in enumerate(loaded) if not isinstance(item, str)]
        masks = [None] * len(chunk)
        if good:
            decisions = detector.decide(detector.score(batch_of([loaded[index][0] for index in good])))
            if decisions.masks is not None:
                for position, index in enumerate(good):
                    masks[index] = decisions.masks[position]
        for index in good:
            original = loaded[index][1]
            height, width = original.shape[:2]
            scale = min(1.0, THUMBNAIL_SIZE / max(height, width))
            small = cv2.resize(original, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
            small = small.reshape(small.shape[0], small.shape[1], original.shape[2])
            mask = None if masks[index] is None else mask_at_original_size(masks[index], small.shape[0], small.shape[1])
            name = f"{offset + index:04d}_{output_stem(chunk[index], stem_chars=40)}.png"
            write_png(folder / name, draw_overlay(small, mask))
            names[offset + index] = name
        offset += len(chunk)
    return names


def build_report(out_dir: Path, settings: dict, detector, gallery: int, workers: int | None = None) -> tuple[Path, dict]:
    """report.html and report_files/ from predictions.csv; returns (report path, counts)."""
    scores, defective, ranked, failures, counts = read_predictions(out_dir / PREDICTIONS_FILE, gallery)
    decision = settings["decision"]
    staging = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.", dir=out_dir))
    try:
        histogram = None
        floor = detector.score_floor  # "nothing found at any level": drawn, such scores squeeze the rest into a corner
        n_floor = int(np.count_nonzero(scores <= floor)) if floor is not None else 0
        drawn = scores > floor if floor is not None else np.ones(len(scores), dtype=bool)
        if drawn.any():
            score_histogram(scores[drawn], defective[drawn], decision.get("threshold"), staging / "scores.png")
            histogram = url_of(f"{REPORT_DIR}/scores.png")
        thumbs = gallery_thumbnails(ranked, detector, staging / "gallery", workers, settings.get("cwd")) if ranked else []
        staging.chmod(0o755)
        final = out_dir / REPORT_DIR
        old = None
        if final.exists():
            old = out_dir / f".{REPORT_DIR}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    items = []
    for row, thumb in zip(ranked, thumbs):
        image_link = relative_link(row_file(row["path"], settings.get("cwd")), out_dir)
        link = relative_link(out_dir / row["overlay"], out_dir) if row["overlay"] else image_link
        items.append(GalleryItem(
            path=row["path"], score=float(row["score"]), defective=row["defective"] == "1",
            thumbnail=url_of(f"{REPORT_DIR}/gallery/{thumb}") if thumb else None, link=link, image_link=image_link,
            area=int(row["defect_area_px"]) if row["defect_area_px"] else None,
        ))
    model_rows = [
        ("model", settings["model_folder"]),
        ("file", settings["model_file"]),
        ("architecture", f"{settings['architecture']} ({settings['loss']} loss)"),
        ("input", f"{settings['image_size']} px, {settings['color_mode']}"),
        ("finetuning result", f"{settings['result']} ({settings['result_folder']})"),
    ]
    decision_rows = [(key.replace("_", " "), _show(value)) for key, value in decision.items() if value is not None]
    notes = []
    if n_floor:
        notes.append(f"{n_floor} images have no region of min_area pixels above any level (score {floor:.4g}); they are not drawn.")
    notes += detector.report_notes()
    data = ReportData(
        title=f"Predictions of {Path(settings['model_folder']).name} ({settings['result']})",
        model=model_rows,
        decision=decision_rows,
        counts=counts,
        histogram=histogram,
        gallery=items,
        gallery_of=len(scores),
        failures=failures,
        links=[("predictions.csv", url_of(PREDICTIONS_FILE)), ("settings", url_of(SETTINGS_FILE))],
        notes=notes,
    )
    return write_report(out_dir / REPORT_FILE, data), counts


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
