"""predict.py's report.html: counts, the score histogram with the threshold, the most suspicious
images first (built from predictions.csv at the end of a run; processing/evaluation/report.py
writes the page)."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from autoencoder.image_size import ImageSize
from processing.data.reviews import REVIEW_FILE, write_review_sheet
from processing.data.tiles import batch_of
from processing.evaluation.overlays import draw_heatmap, draw_overlay, mask_at_original_size, write_png
from processing.evaluation.report import GalleryItem, ReportData, relative_link, score_histogram, url_of, write_report
from processing.workflow.predict.csv_io import read_predictions
from processing.workflow.predict.loading import iter_loaded
from processing.workflow.predict.settings import PREDICTIONS_FILE, REPORT_DIR, REPORT_FILE, SETTINGS_FILE, output_stem, row_file

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256  # longest side of a gallery picture, in pixels


def gallery_thumbnails(rows: list[dict], detector, folder: Path, workers: int | None,
                       cwd: str | None = None) -> tuple[list[str | None], list[str | None]]:
    """Overlays and heat maps of the gallery's images, at most THUMBNAIL_SIZE pixels a side, scored
    again (a few dozen images): the report needs nothing written during the run. None where the
    image cannot be read any more (and heat maps None for a detector without maps)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [row_file(row["path"], cwd) for row in rows]
    names: list[str | None] = [None] * len(rows)
    heat_names: list[str | None] = [None] * len(rows)
    heat_scale = detector.heatmap_scale()
    threshold = detector.decision_summary()["threshold"]
    offset = 0
    for chunk, loaded in iter_loaded(paths, detector.read_input, detector.batch_size, workers):
        good = [index for index, item in enumerate(loaded) if not isinstance(item, str)]
        masks, maps = [None] * len(chunk), [None] * len(chunk)
        if good:
            scores = detector.score(batch_of([loaded[index][0] for index in good]))
            decisions = detector.decide(scores)
            for position, index in enumerate(good):
                masks[index] = None if decisions.masks is None else decisions.masks[position]
                maps[index] = None if scores.maps is None or heat_scale is None else scores.maps[position]
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
            if maps[index] is not None:
                heat_name = name.replace(".png", "_heatmap.png")
                write_png(folder / heat_name, draw_heatmap(small, maps[index], threshold, heat_scale))
                heat_names[offset + index] = heat_name
        offset += len(chunk)
    return names, heat_names


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
        thumbs, heatmaps = gallery_thumbnails(ranked, detector, staging / "gallery", workers, settings.get("cwd")) if ranked else ([], [])
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
    for row, thumb, heatmap in zip(ranked, thumbs, heatmaps):
        image_link = relative_link(row_file(row["path"], settings.get("cwd")), out_dir)
        link = relative_link(out_dir / row["overlay"], out_dir) if row["overlay"] else image_link
        items.append(GalleryItem(
            path=row["path"], score=float(row["score"]), defective=row["defective"] == "1",
            thumbnail=url_of(f"{REPORT_DIR}/gallery/{thumb}") if thumb else None, link=link, image_link=image_link,
            heatmap=url_of(f"{REPORT_DIR}/gallery/{heatmap}") if heatmap else None,
            area=int(row["defect_area_px"]) if row["defect_area_px"] else None,
        ))
    model_rows = [
        ("model", settings["model_folder"]),
        ("file", settings["model_file"]),
        ("architecture", f"{settings['architecture']} ({settings['loss']} loss)"),
        ("input", f"{ImageSize.of(settings['image_size'])} px, {settings['color_mode']}"),
        ("finetuning result", f"{settings['result']} ({settings['result_folder']})"),
    ]
    decision_rows = [(key.replace("_", " "), _show(value)) for key, value in decision.items() if value is not None]
    notes = []
    if n_floor:
        notes.append(f"{n_floor} images have no region of min_area pixels above any level (score {floor:.4g}); they are not drawn.")
    scale = detector.heatmap_scale()
    if scale is not None and any(heatmaps):
        notes.append(f"Beside each overlay, the image under its anomaly map as a heat map: dark at {scale[0]:.4g}, bright at "
                     f"{scale[1]:.4g}, the threshold {decision.get('threshold'):.4g} in the middle and the outline of where the map "
                     "exceeds it in white (before the minimum area); the same scale for every image.")
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
    report = write_report(out_dir / REPORT_FILE, data)
    if (out_dir / REVIEW_FILE).exists():  # it may hold an inspector's labels: never read nor rewritten here
        logger.info("%s exists (an inspector's labels?): left as it is; delete it for a new sheet", out_dir / REVIEW_FILE)
    else:
        with open(out_dir / PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            rows = [{"path": row["path"], "score": row["score"], "defective": row["defective"]} for row in csv.DictReader(handle)]
        write_review_sheet(out_dir / REVIEW_FILE, rows)
    return report, counts


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
