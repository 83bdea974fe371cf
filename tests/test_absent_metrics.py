"""Metrics that cannot be computed (no ground-truth masks, one class only) are reported as absent:
`null` in JSON, `n/a` in printed and logged lines, with a line saying why; never `nan`."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import finetune
import test as test_script
import train
from autoencoder import bundle
from processing.data.demo import make_demo_dataset
from processing.evaluation.metrics import absent_note, absent_to_none, format_metric, format_metrics, is_absent
from processing.workflow.benchmarking import FINAL_KEYS, absent_lines, final_line, format_table, select_best, summary_metrics
from processing.workflow.testing import mark_absent

SIZE = 32
NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def no_masks(tmp_path_factory):
    """A demo dataset without ground_truth/, trained 1 epoch, finetuned and tested; returns
    (test_result.json content, its raw text, the log text of test.py)."""
    root = tmp_path_factory.mktemp("data") / "tiles"
    make_demo_dataset(root, image_size=SIZE, n_train=24, n_test_good=8, n_test_defect=5, texture="brick", seed=4)
    shutil.rmtree(root / "ground_truth")
    work = tmp_path_factory.mktemp("work")
    folder = train.main(["-d", str(root), "-a", "mvtecCAE", "-l", "l2", "--image-size", str(SIZE), "--epochs", "1",
                         "--lr", "1e-3", "--seed", "1", "--output-dir", str(work / "models")])
    results = work / "results"
    finetune.main(["-p", str(folder), "--results-dir", str(results)])
    handler = _ListHandler()
    logger = logging.getLogger("processing.workflow.testing")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        (out_dir,) = test_script.main(["-p", str(folder), "--results-dir", str(results)])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = (out_dir / "test_result.json").read_text()
    return json.loads(text), text, "\n".join(handler.messages)


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_json_has_null_pixel_metrics_and_the_reason(no_masks):
    result, text, _ = no_masks
    assert result["pixel_auroc"] is None and result["aupro"] is None and result["mean_iou"] is None
    assert result["not_available"] == dict.fromkeys(["pixel_auroc", "aupro", "mean_iou"], "no ground-truth masks")
    for name, metrics in result["per_defect_type"].items():
        assert metrics["pixel_auroc"] is None and metrics["aupro"] is None, name
        assert metrics["image_auroc"] is not None
    assert 0.0 <= result["image_auroc"] <= 1.0
    assert "NaN" not in text and not NAN_WORD.search(text)


def test_logged_summary_says_n_a_and_why(no_masks):
    _, _, log = no_masks
    summary = [line for line in log.splitlines() if "image_auroc=" in line]
    assert len(summary) == 1 and "pixel_auroc=n/a" in summary[0] and "aupro=n/a" in summary[0]
    assert "pixel_auroc, aupro, mean_iou: n/a (no ground-truth masks)" in log
    assert not NAN_WORD.search(log)


def test_benchmark_table_and_final_line_of_a_result_without_masks(no_masks):
    result, _, _ = no_masks
    run = {
        "name": "mvtecCAE-l2-32", "method": "l2", "dtype": "float64",
        "finetuning": {"image_auroc": 0.8, "best_score": 0.7},
        "test": result,
        "summary": summary_metrics(result, SimpleNamespace(training=SimpleNamespace(seconds=3.0))),
    }
    table = format_table(run)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == len(result["per_defect_type"]) + 1
    for row in rows:  # pixel_auroc and aupro columns
        assert row.split()[4:6] == ["n/a", "n/a"], row
    line = final_line(run)
    assert "pixel_auroc=n/a aupro=n/a" in line and not NAN_WORD.search(line + table)
    assert absent_lines(run) == ["pixel_auroc, aupro: n/a (no ground-truth masks)"]


def record(**summary):
    return {
        "name": "x", "method": "l2", "dtype": "float64",
        "finetuning": {"image_auroc": summary.pop("selection", None), "best_score": summary.pop("score", None)},
        "test": {"per_defect_type": {"crack": {"n_images": 3, "n_defective": 1, "image_auroc": None}},
                 "n_images": 4, "n_defective": 1, "image_auroc": None, "pixel_auroc": 0.5, "tpr": math.nan},
        "summary": dict.fromkeys(FINAL_KEYS, 0.5) | summary,
    }


def test_final_line_and_table_print_none_and_nan_as_n_a():
    run = record(image_auroc=None, aupro=math.nan, train_s=12.34, infer_ms_per_image=3.21)
    assert final_line(run) == ("image_auroc=n/a pixel_auroc=0.500 aupro=n/a balanced_accuracy=0.500 "
                               "balanced_accuracy_ratio=0.500 train_s=12.3 infer_ms_per_image=3.2")
    table = format_table(run)
    assert "image_auroc n/a, balanced accuracy n/a" in table
    header, crack, overall = table.splitlines()[1:]
    assert crack.split()[:5] == ["crack", "3", "1", "n/a", "n/a"]
    assert overall.split()[:6] == ["all", "4", "1", "n/a", "0.500", "n/a"]
    assert not NAN_WORD.search(table)
    assert absent_lines(run) == ["image_auroc, aupro: n/a (not computed)"]


def test_selection_counts_absent_as_lowest():
    assert select_best([record(selection=None, score=0.9), record(selection=0.1, score=0.1)]) == 1
    assert select_best([record(selection=0.6, score=None), record(selection=0.6, score=0.2)]) == 1
    assert select_best([record(selection=math.nan, score=0.9), record(selection=0.5, score=0.1)]) == 1


def test_one_class_test_set_marks_the_undefined_metrics():
    result = mark_absent({"n_images": 3, "n_defective": 0, "tpr": math.nan, "tnr": 1.0, "image_auroc": math.nan,
                          "density_threshold": None, "settings": {"method": None}}, masks=True)
    assert result["tpr"] is None and result["image_auroc"] is None and result["tnr"] == 1.0
    assert result["not_available"] == {"tpr": "no defective test images", "image_auroc": "no defective test images"}
    assert absent_note(result["not_available"]) == ["tpr, image_auroc: n/a (no defective test images)"]


def test_formatting_helpers():
    assert [format_metric(v) for v in (None, math.nan, np.float32("nan"), 0.12345, 3, np.int64(4))] == \
        ["n/a", "n/a", "n/a", "0.123", "3", "4"]
    assert format_metrics({"a": None, "b": 0.5}, ["a", "b", "c"]) == "a=n/a b=0.500"
    assert is_absent(None) and is_absent(float("nan")) and not is_absent(0.0) and not is_absent("text")
    assert absent_to_none({"a": [1.0, math.nan], "b": np.array([np.nan, 2.0]), "c": (math.nan,)}) == \
        {"a": [1.0, None], "b": [None, 2.0], "c": [None]}


def test_write_json_writes_nan_as_null(tmp_path):
    path = bundle.write_json(tmp_path / "r.json", {"a": math.nan, "b": [np.float64("nan"), 1.0], "c": np.array([np.nan])})
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": [None]}
