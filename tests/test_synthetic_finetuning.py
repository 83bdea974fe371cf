"""Decisions without real defects: finetune.py on a dataset whose test/ holds only good images
chooses its pair on synthetic defects drawn into the validation images (kept in the result), and
test.py and predict.py apply such a result unchanged; --max-false-alarms lets the thresholds flag a
share of the validation images."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

import finetune
import predict
import test as test_script
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.decision.thresholds import allowed_false_alarms, min_thresholds_for_areas
from processing.workflow.results import load_detector

SIZE = 32


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_demo_dataset(root / "tiles", image_size=SIZE, n_train=30, n_test_good=8, n_test_defect=4, texture="brick", seed=3)
    shutil.copytree(root / "tiles", root / "good_only")
    for folder in ("crack", "scratch", "spot"):
        shutil.rmtree(root / "good_only" / "test" / folder)
    shutil.rmtree(root / "good_only" / "ground_truth", ignore_errors=True)
    return root


@pytest.fixture(scope="module")
def good_only_model(work):
    return train.main(["-d", str(work / "good_only"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                       "--epochs", "1", "--lr", "1e-3", "--output-dir", str(work / "models")])


def test_a_dataset_without_defects_is_finetuned_on_synthetic_defects(good_only_model, work):
    results = work / "results"
    out = finetune.main(["-p", str(good_only_model), "--results-dir", str(results)])
    result = json.loads((out / "finetuning_result.json").read_text())
    subset = result["finetuning_subset"]
    assert subset["source"] == "synthetic defects" and "holds no defect class" in subset["why"]
    images = sorted((out / "synthetic" / "images").glob("*.png"))
    assert len(images) == sum(subset["kinds"].values()) >= 60
    assert set(subset["kinds"]) <= {"scratch", "crack", "spot", "stain", "missing_material", "added_material", "brightness"}
    rows = list(csv.DictReader(open(out / "synthetic" / "defects.csv")))
    assert len(rows) == len(images) and {row["kind"] for row in rows} == set(subset["kinds"])
    for image in images[:10]:  # each synthetic image differs from its source inside its mask
        mask = cv2.imread(str(out / "synthetic" / "masks" / f"{image.stem}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert mask.any()
    # The good part: the test/good share, which test.py then leaves out.
    assert result["finetuning_files"] and all(name.startswith("test/good/") for name in result["finetuning_files"])
    assert 0 <= result["best_tpr"] <= 1 and result["best_tnr"] is not None

    (test_dir,) = test_script.main(["-p", str(good_only_model), "--results-dir", str(results)])
    tested = json.loads((test_dir / "test_result.json").read_text())
    assert tested["n_defective"] == 0 and tested["n_images"] == 8 - len(result["finetuning_files"])
    assert tested["tnr"] is not None and tested["image_auroc"] is None
    assert tested["not_available"]["image_auroc"] == "no defective test images"

    summary = predict.main(["-p", str(good_only_model), "-i", str(work / "good_only" / "test"), "-o", str(work / "predicted"),
                            "--results-dir", str(results)])
    assert summary.n_images == 8 and summary.n_failed == 0


def test_synthetic_defects_on_request_and_their_pair_against_the_validation_images(good_only_model, work):
    """--synthetic-defects on a dataset with defects; with --rule original the chosen threshold keeps
    every validation image clean, as with real defects."""
    model = train.main(["-d", str(work / "tiles"), "-a", "mvtecCAE", "-l", "l2", "-b", "8", "--image-size", str(SIZE),
                        "--epochs", "1", "--lr", "1e-3", "--output-dir", str(work / "models_tiles")])
    out = finetune.main(["-p", str(model), "--synthetic-defects", "--rule", "original", "--results-dir", str(work / "r2")])
    result = json.loads((out / "finetuning_result.json").read_text())
    assert result["finetuning_subset"]["why"] == "--synthetic-defects"
    assert all(name.startswith("test/good/") for name in result["finetuning_files"])
    detector = load_detector(bundle.load_bundle(model), out)
    from processing.data.splits import model_dataset, validation_files

    layout = model_dataset(detector.model.info)
    maps = detector.maps.maps_of_files(validation_files(layout, detector.model.info))
    from processing.decision.segmentation import is_defective

    assert not is_defective(maps, detector.threshold, detector.min_area, clear_border=detector.clear_border).any()


def test_max_false_alarms_loosens_the_thresholds_within_the_rate(good_only_model, work):
    results = work / "r3"
    strict = finetune.main(["-p", str(good_only_model), "--rule", "original", "--results-dir", str(results / "strict")])
    loose = finetune.main(["-p", str(good_only_model), "--rule", "original", "--max-false-alarms", "0.4", "--results-dir",
                           str(results / "loose")])
    strict_result = json.loads((strict / "finetuning_result.json").read_text())
    loose_result = json.loads((loose / "finetuning_result.json").read_text())
    assert loose_result["max_false_alarms"] == 0.4 and "max_false_alarms" not in strict_result
    n_val = loose_result["n_validation"]
    assert loose_result["allowed_false_alarms"] == allowed_false_alarms(0.4, n_val) >= 1
    # Every min_area's threshold is at most the strict one, and some are lower.
    loose_thresholds, strict_thresholds = loose_result["search"]["thresholds"], strict_result["search"]["thresholds"]
    assert all(a <= b for a, b in zip(loose_thresholds, strict_thresholds))
    assert any(a < b for a, b in zip(loose_thresholds, strict_thresholds))


def test_thresholds_allowing_false_alarms_equal_a_naive_count():
    rng = np.random.default_rng(0)
    curves = rng.integers(0, 60, (12, 40))
    grid = np.linspace(0, 1, 40)
    areas = [5, 20, 45, 59]
    for allowed in range(0, 13):
        expected = []
        for area in areas:
            ok = [j for j in range(len(grid)) if sum((curves[n, j:] >= area).any() for n in range(len(curves))) <= allowed]
            expected.append(grid[ok[0]] if ok else grid[-1])
        np.testing.assert_array_equal(min_thresholds_for_areas(curves, grid, areas, allowed), expected)


def test_bad_rates_and_detectors_are_refused_in_one_line(good_only_model, work, capsys):
    assert cli.run(finetune.main, ["-p", str(good_only_model), "--max-false-alarms", "1.5", "--results-dir", str(work / "r4")]) == 2
    assert "--max-false-alarms 1.5: expected a fraction of the good images in [0, 1)" in capsys.readouterr().err
    argv = ["-p", str(good_only_model), "--detector", "kde", "--rule", "original", "--max-false-alarms", "0.1", "--results-dir",
            str(work / "r4")]
    assert cli.run(finetune.main, argv) == 2
    assert "the original rule of --detector kde keeps every validation image normal; use --rule smoothed" in capsys.readouterr().err
    argv = ["-p", str(good_only_model), "--max-false-alarms", "0.1", "--min-detection", "0.9", "--results-dir", str(work / "r4")]
    with pytest.raises(SystemExit) as exit_info:  # argparse: one operating point
        cli.run(finetune.main, argv)
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    argv = ["-p", str(good_only_model), "--rule", "original", "--min-detection", "0.9", "--results-dir", str(work / "r4")]
    assert cli.run(finetune.main, argv) == 2
    assert "--min-detection needs --rule smoothed" in capsys.readouterr().err
    # The original rule counts whole validation images: a rate that allows none of them is refused (issue 30, case 12).
    argv = ["-p", str(good_only_model), "--rule", "original", "--max-false-alarms", "0.01", "--results-dir", str(work / "r4")]
    assert cli.run(finetune.main, argv) == 2
    assert "--max-false-alarms 0.01: allows none of the" in capsys.readouterr().err
    argv = ["-p", str(good_only_model), "--min-detection", "0", "--results-dir", str(work / "r4")]
    assert cli.run(finetune.main, argv) == 2
    assert "--min-detection 0.0: expected a fraction of the defective images in (0, 1]" in capsys.readouterr().err
    assert not (work / "r4").exists()
