"""Per-pixel standardisation of residual maps (finetune.py --normalize pixel) and its use by test.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import finetune
import test as test_script
import train
from autoencoder import bundle, cli
from processing.data.demo import make_demo_dataset
from processing.data.images import load_images, scan_dataset, split_train_validation
from processing.decision.thresholds import max_component_level
from processing.maps.postprocess import (
    PIXEL_STATISTICS_FILE,
    STD_FLOOR_FRACTION,
    ResmapPostprocessor,
    fit_pixel_statistics,
    standardize_resmaps,
)
from processing.maps.resmaps import calculate_resmaps

SIZE = 32


def test_pixel_statistics_match_a_naive_loop():
    rng = np.random.default_rng(0)
    maps = rng.gamma(2.0, 0.1, size=(12, 6, 7))
    maps[:, 0, 0] = 0.5  # no spread at one pixel: its std is floored
    mean, std = fit_pixel_statistics(maps)
    naive_mean = np.zeros((6, 7))
    naive_std = np.zeros((6, 7))
    for i in range(6):
        for j in range(7):
            values = [maps[k, i, j] for k in range(12)]
            naive_mean[i, j] = sum(values) / 12
            naive_std[i, j] = (sum((v - naive_mean[i, j]) ** 2 for v in values) / 12) ** 0.5
    floor = STD_FLOOR_FRACTION * naive_std.mean()
    np.testing.assert_allclose(mean, naive_mean, rtol=1e-12)
    np.testing.assert_allclose(std, np.maximum(naive_std, floor), rtol=1e-12)
    assert std[0, 0] == pytest.approx(floor)
    z = standardize_resmaps(maps[:2], mean, std)
    np.testing.assert_allclose(z, (maps[:2] - naive_mean) / np.maximum(naive_std, floor), rtol=1e-12)


def test_bad_statistics_input_is_rejected():
    with pytest.raises(ValueError, match=r"at least 2 maps"):
        fit_pixel_statistics(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="all identical"):
        fit_pixel_statistics(np.ones((3, 4, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, 5, 5\) do not match the pixel statistics of shape \(4, 4\)"):
        standardize_resmaps(np.zeros((2, 5, 5)), np.zeros((4, 4)), np.ones((4, 4)))


def test_postprocessor_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(1)
    mean, std = fit_pixel_statistics(rng.random((5, 8, 8)))
    post = ResmapPostprocessor(1.5, mean, std)
    post.save_statistics(tmp_path)
    again = ResmapPostprocessor.from_finetuning(tmp_path, 1.5, "pixel")
    maps = rng.random((3, 8, 8))
    np.testing.assert_array_equal(post(maps), again(maps))
    assert ResmapPostprocessor.from_finetuning(tmp_path, 0.0, "none").normalization == "none"
    with pytest.raises(ValueError, match=f"{PIXEL_STATISTICS_FILE} not found"):
        ResmapPostprocessor.from_finetuning(tmp_path / "elsewhere", 0.0, "pixel")


@pytest.fixture(scope="module")
def normalized_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("normalize")
    data = work / "tiles"
    make_demo_dataset(data, image_size=SIZE, n_train=30, n_test_good=10, n_test_defect=6, texture="brick", seed=2)
    folder = train.main(["-d", str(data), "-a", "mvtecCAE", "-l", "l2", "--image-size", str(SIZE), "--epochs", "1",
                         "--lr", "1e-3", "--seed", "4", "--output-dir", str(work / "models")])
    results = work / "results"
    finetune_dir = finetune.main(["-p", str(folder), "-m", "l2", "--smoothing", "1", "--normalize", "pixel",
                                  "--results-dir", str(results)])
    test_dir, = test_script.main(["-p", str(folder), "--results-dir", str(results)])
    return data, Path(folder), Path(finetune_dir), Path(test_dir)


def test_finetuning_stores_statistics_of_the_training_maps(normalized_run):
    data, folder, finetune_dir, _ = normalized_run
    result = json.loads((finetune_dir / "finetuning_result.json").read_text())
    assert result["normalize"] == "pixel"
    lo, hi = result["value_range"]
    assert lo < result["best_threshold"] < hi
    model = bundle.load_bundle(folder)
    train_files, _ = split_train_validation(scan_dataset(data).train_good, 0.1, 4)
    images = load_images(train_files, "grayscale", SIZE)
    maps = calculate_resmaps(images, model.model.predict(images, verbose=0), method="l2")
    expected_mean, expected_std = fit_pixel_statistics(ResmapPostprocessor(1.0)(maps))
    with np.load(finetune_dir / PIXEL_STATISTICS_FILE) as stats:
        np.testing.assert_allclose(stats["mean"], expected_mean, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(stats["std"], expected_std, rtol=1e-5, atol=1e-9)


def test_test_scores_the_standardised_maps(normalized_run):
    data, folder, finetune_dir, test_dir = normalized_run
    finetuning = json.loads((finetune_dir / "finetuning_result.json").read_text())
    assert json.loads((test_dir / "test_result.json").read_text())["normalize"] == "pixel"
    rows = list(csv.DictReader(open(test_dir / "classification.csv")))
    model = bundle.load_bundle(folder)
    images = load_images([data / row["file"] for row in rows], "grayscale", SIZE)
    maps = calculate_resmaps(images, model.model.predict(images, verbose=0), method="l2")
    z = ResmapPostprocessor.from_finetuning(finetune_dir, finetuning["smoothing_sigma"], finetuning["normalize"])(maps)
    scores = max_component_level(z, finetuning["best_min_area"], empty_score=finetuning["value_range"][0] - 1)
    np.testing.assert_allclose([float(row["score"]) for row in rows], scores, rtol=1e-4, atol=1e-4)


def test_normalize_needs_float_maps(normalized_run, capsys):
    _, folder, _, _ = normalized_run
    assert cli.run(finetune.main, ["-p", str(folder), "-t", "uint8", "--normalize", "pixel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: --normalize pixel needs float64 maps: use -t float64 (got -t uint8)"
