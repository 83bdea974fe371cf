"""clear_border=False (finetune.py/benchmark.py --keep-border): components touching the border are kept.

The one-pass component tree is checked against relabelling every map at every threshold, the image
score against the segmentation decision, and finetune.py -> test.py against the library calls.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import benchmark as benchmark_script
import finetune
import test as test_script
import train
from autoencoder import bundle
from processing.decision.segmentation import is_defective, largest_component_areas, segment
from processing.decision.thresholds import (
    largest_area_curves,
    largest_area_curves_naive,
    max_component_level,
    search_min_area_threshold,
    threshold_grid,
)
from processing.maps.inference import compute_resmaps
from processing.workflow.benchmarking import BenchmarkConfig, expand_grid, finetuning_image_auroc
from processing.workflow.results import load_detector
from tests.test_workflow import SIZE, dataset, train_args  # noqa: F401  (dataset is a fixture)


def random_maps(kind, seed, n_maps=20, side=24):
    """Smooth-ish random maps (blobs of various sizes, some touching the border)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    maps = ndi.gaussian_filter(rng.random((n_maps, side, side)), sigma=(0, 1.5, 1.5))
    maps = (maps - maps.min()) / (maps.max() - maps.min())
    if kind == "uint8":
        return np.round(maps * 40).astype(np.uint8)
    return maps


# ----------------------------------------------------------------------------- library


def border_blob_map(side=16):
    """(1, side, side) float map whose only bright component (4x5 = 20 px) touches the left edge."""
    resmap = np.zeros((1, side, side))
    resmap[0, 5:9, 0:5] = 1.0
    return resmap


def test_border_component_is_kept_only_without_border_clearing():
    resmap = border_blob_map()
    np.testing.assert_array_equal(largest_component_areas(resmap, 0.5, clear_border=False), [20])
    np.testing.assert_array_equal(largest_component_areas(resmap, 0.5), [0])
    assert is_defective(resmap, 0.5, 20, clear_border=False)[0]
    assert not is_defective(resmap, 0.5, 1)[0]
    np.testing.assert_array_equal(segment(resmap, 0.5, 20, clear_border=False), resmap > 0.5)
    assert not segment(resmap, 0.5, 1).any()
    assert max_component_level(resmap, 20, clear_border=False)[0] == 1.0
    assert max_component_level(resmap, 1, empty_score=-np.inf)[0] == -np.inf
    grid = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(largest_area_curves(resmap, grid, clear_border=False), [[20, 20, 0]])
    # At t = 0 the whole image is one component, which touches the border either way.
    np.testing.assert_array_equal(largest_area_curves(resmap, grid), [[0, 0, 0]])


def test_interior_components_are_the_same_either_way():
    resmap = np.zeros((1, 16, 16))
    resmap[0, 4:8, 5:10] = 0.8
    for clear_border in (True, False):
        assert largest_component_areas(resmap, 0.5, clear_border=clear_border)[0] == 20
        assert max_component_level(resmap, 20, clear_border=clear_border)[0] == 0.8


@pytest.mark.parametrize("kind", ["float64", "uint8"])
@pytest.mark.parametrize("clear_border", [False, True])
def test_curves_match_relabelling_every_threshold(kind, clear_border):
    maps = random_maps(kind, seed=11)
    grid = threshold_grid(maps, kind, n_steps=60)
    fast = largest_area_curves(maps, grid, clear_border=clear_border)
    naive = largest_area_curves_naive(maps, grid, clear_border=clear_border)
    np.testing.assert_array_equal(fast, naive)
    if not clear_border:
        # Independent of the toolkit: scipy labelling, largest 8-connected component, no clearing.
        from scipy import ndimage as ndi

        for index in (0, 7):
            for column in (0, len(grid) // 3, len(grid) // 2):
                labels, count = ndi.label(maps[index] > grid[column], structure=np.ones((3, 3)))
                largest = np.bincount(labels.ravel())[1:].max() if count else 0
                assert fast[index, column] == largest


def test_keeping_the_border_never_shrinks_the_curves():
    maps = random_maps("float64", seed=4)
    grid = threshold_grid(maps, "float64", n_steps=40)
    kept = largest_area_curves(maps, grid, clear_border=False)
    cleared = largest_area_curves(maps, grid)
    assert np.all(kept >= cleared) and np.any(kept > cleared)
    # Without clearing the set only shrinks as t grows: the curves are non-increasing.
    assert np.all(np.diff(kept, axis=1) <= 0)


def naive_max_component_level(resmap, min_area, clear_border, empty_score):
    """sup{t : is_defective(resmap, t)} by trying one threshold per interval between map values."""
    values = np.unique(resmap)
    # {resmap > t} is constant for t in [values[k], values[k + 1]); below values[0] it is everything.
    probes = np.concatenate([[values[0] - 1.0], values[:-1]])
    sups = values
    best = empty_score
    for probe, sup in zip(probes, sups):
        if is_defective(resmap[None], np.float64(probe), min_area, clear_border=clear_border)[0]:
            best = max(best, float(sup))
    return best


@pytest.mark.parametrize("kind", ["float64", "uint8"])
@pytest.mark.parametrize("clear_border", [False, True])
def test_image_score_matches_the_segmentation_decision(kind, clear_border):
    maps = random_maps(kind, seed=23, side=20)
    for min_area in (1, 12, 60):
        scores = max_component_level(maps, min_area, empty_score=-np.inf, clear_border=clear_border)
        expected = [naive_max_component_level(m, min_area, clear_border, -np.inf) for m in maps]
        np.testing.assert_array_equal(scores, expected)
        if not clear_border:
            # Monotone decision: defective exactly below the score.
            for resmap, score in zip(maps, scores):
                below = np.unique(resmap)
                below = below[below < score]
                assert all(is_defective(resmap[None], np.float64(t), min_area, clear_border=False)[0] for t in below)
                assert not is_defective(resmap[None], np.float64(score), min_area, clear_border=False)[0]


def test_search_fast_equals_naive_without_border_clearing():
    maps = random_maps("uint8", seed=5, n_maps=16)
    val, tune = maps[:6], maps[6:]
    labels = np.arange(len(tune)) % 2 == 0
    kwargs = dict(min_areas=[5, 20, 80], progress=False, clear_border=False)
    fast = search_min_area_threshold(val, tune, labels, "uint8", **kwargs)
    naive = search_min_area_threshold(val, tune, labels, "uint8", naive=True, **kwargs)
    np.testing.assert_array_equal(fast.val_curves, naive.val_curves)
    np.testing.assert_array_equal(fast.finetune_curves, naive.finetune_curves)
    np.testing.assert_array_equal(fast.pair_thresholds, naive.pair_thresholds)
    assert (fast.best_min_area, fast.best_threshold) == (naive.best_min_area, naive.best_threshold)
    cleared = search_min_area_threshold(val, tune, labels, "uint8", min_areas=[5, 20, 80], progress=False)
    assert not np.array_equal(cleared.val_curves, fast.val_curves)


@pytest.mark.parametrize("bad", ["no", 0, None])
def test_clear_border_must_be_a_bool(bad):
    maps = border_blob_map()
    with pytest.raises(ValueError, match="clear_border"):
        segment(maps, 0.5, 1, clear_border=bad)
    with pytest.raises(ValueError, match="clear_border"):
        largest_area_curves(maps, [0.0, 1.0], clear_border=bad)
    with pytest.raises(ValueError, match="clear_border"):
        max_component_level(maps, 1, clear_border=bad)


# ----------------------------------------------------------------------------- CLIs


def test_cli_flags_parse():
    assert finetune.parse_args(["-p", "m", "--keep-border"]).clear_border is False
    assert finetune.parse_args(["-p", "m", "--clear-border"]).clear_border is True
    assert finetune.parse_args(["-p", "m"]).clear_border is None  # the map decides: pixel maps clear it
    with pytest.raises(SystemExit):
        finetune.parse_args(["-p", "m", "--keep-border", "--clear-border"])
    config = benchmark_script.config_from_args(benchmark_script.parse_args(["-d", "x", "--keep-border"]))
    assert config.clear_border is False
    assert benchmark_script.config_from_args(benchmark_script.parse_args(["-d", "x"])).clear_border is None


def test_benchmark_config_rejects_a_non_bool_clear_border():
    with pytest.raises(ValueError, match="clear_border"):
        expand_grid(BenchmarkConfig(input_dir="", clear_border="yes"))


@pytest.fixture(scope="module")
def finetuned(dataset, tmp_path_factory):  # noqa: F811
    """A 1-epoch model finetuned and tested twice: with --keep-border (results 'kept') and without ('cleared')."""
    work = tmp_path_factory.mktemp("keep_border")
    folder = train.main(train_args(dataset, work / "models", "--epochs", "1", "--lr", "1e-3", "--seed", "4"))
    dirs = {}
    for name, extra in (("kept", ["--keep-border"]), ("cleared", [])):
        results = work / name
        dirs[name] = Path(finetune.main(["-p", str(folder), "-m", "l2", "-t", "uint8", "--results-dir", str(results), *extra]))
        test_script.main(["-p", str(folder), "--results-dir", str(results)])
    return Path(folder), dirs


def test_finetune_and_test_record_and_apply_the_flag(finetuned, dataset):  # noqa: F811
    folder, dirs = finetuned
    model = bundle.load_bundle(folder)
    for name, clear_border in (("kept", False), ("cleared", True)):
        finetuning = json.loads((dirs[name] / "finetuning_result.json").read_text())
        assert finetuning["clear_border"] is clear_border
        assert finetuning["settings"]["clear_border"] is clear_border
        test_dir = dirs[name].parent.parent / "test" / "l2_uint8"
        tested = json.loads((test_dir / "test_result.json").read_text())
        assert tested["clear_border"] is clear_border

        rows = list(csv.DictReader(open(test_dir / "classification.csv")))
        paths = [dataset / row["file"] for row in rows]
        resmaps = compute_resmaps(model.model, paths, "grayscale", SIZE, "l2", "uint8", 16)
        min_area, threshold = finetuning["best_min_area"], finetuning["best_threshold"]
        predictions = np.array([int(row["prediction"]) for row in rows])
        scores = np.array([float(row["score"]) for row in rows])
        np.testing.assert_array_equal(predictions, is_defective(resmaps, threshold, min_area, clear_border=clear_border))
        # uint8 l2 maps: test.py scores an image without a component of min_area as 0 - 1.
        expected = [naive_max_component_level(m, min_area, clear_border, -1.0) for m in resmaps]
        np.testing.assert_array_equal(scores, expected)
        assert np.all(scores[predictions == 1] > threshold)
        if not clear_border:
            # Monotone decision: a test image is predicted defective exactly when it scores above the threshold.
            np.testing.assert_array_equal(predictions, scores > threshold)


def test_benchmark_finetuning_auroc_uses_the_flag(finetuned, dataset):  # noqa: F811
    folder, dirs = finetuned
    finetuning = json.loads((dirs["kept"] / "finetuning_result.json").read_text())
    model = bundle.load_bundle(folder)
    files = [dataset / name for name in finetuning["finetuning_files"]]
    labels = [Path(name).parent.name != "good" for name in finetuning["finetuning_files"]]
    resmaps = compute_resmaps(model.model, files, "grayscale", SIZE, "l2", "uint8", 16)
    scores = [naive_max_component_level(m, finetuning["best_min_area"], False, -1.0) for m in resmaps]
    assert finetuning_image_auroc(load_detector(model, dirs["kept"])) == pytest.approx(roc_auc_score(labels, scores))
